"""The kernel's middleware: correlation ids and request metrics on every request; on /v1, in
this order: bearer auth, the route's scope, the key's write rate, Idempotency-Key (POST)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pymongo.asynchronous.collection import AsyncCollection
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from shared.http.auth import RouteScopes, missing_scope
from shared.http.errors import error_body, error_response
from shared.http.idempotency import IDEMPOTENCY_KEY_RE, Idempotency, invalid_key, request_record
from shared.http.rate_limit import WRITE_METHODS, WriteLimits
from shared.keys import KeyRing, Principal
from shared.logs import correlation_id_var, key_id_var
from shared.metrics import Metrics


def _route_template(request: Request) -> str:
    """The route's path template (bounded label values), set by the router once it matched."""
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class KernelMiddleware(BaseHTTPMiddleware):
    """Auth, scope and write rate on /v1, Idempotency-Key on POST /v1, correlation ids,
    request metrics."""

    def __init__(
        self,
        app: Any,
        *,
        metrics: Metrics,
        keys: KeyRing,
        idempotency: AsyncCollection[dict[str, Any]],
        scopes: RouteScopes,
        limits: WriteLimits | None = None,
    ) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.keys = keys
        self.idempotency = idempotency
        self._idempotency = Idempotency(idempotency)
        self.scopes = scopes
        self.limits = limits or WriteLimits()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        # One id ties the request's log lines to the events it causes (their correlationid).
        correlation = (
            request.headers.get("X-Correlation-Id")
            or request.headers.get("X-Request-Id")
            or str(uuid.uuid4())
        )
        token = correlation_id_var.set(correlation)
        try:
            response = await self._dispatch(request, call_next)
        finally:
            correlation_id_var.reset(token)
        response.headers["X-Correlation-Id"] = correlation
        route = _route_template(request)
        self.metrics.http_requests.labels(
            self.metrics.service, route, str(response.status_code)
        ).inc()
        self.metrics.http_seconds.labels(self.metrics.service, route).observe(
            time.perf_counter() - started
        )
        return response

    async def _dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        principal = self._check_auth(request)
        if isinstance(principal, Response):
            return principal
        request.state.principal = principal
        audit = key_id_var.set(principal.key_id)
        try:
            refused = self._refusal(request, principal)
            if refused is not None:
                return refused
            return await self._authorised(request, call_next)
        finally:
            key_id_var.reset(audit)

    def _refusal(self, request: Request, principal: Principal) -> Response | None:
        """403 when the key lacks the scope of the route the request goes to, 429 when it is
        over its write rate; None when the request may go on. Both come before an
        Idempotency-Key record is claimed or replayed, so neither is ever kept."""
        route, scope = self.scopes.match(request)
        if route is not None:
            # A refusal is counted under its route (the router sets it for the others).
            request.scope.setdefault("route", route)
        if scope is not None and not principal.allows(scope):
            return error_response(missing_scope(scope))
        if request.method in WRITE_METHODS:
            wait = self.limits.take(principal)
            if wait is not None:
                return self.limits.refusal(principal, wait)
        return None

    async def _authorised(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return await call_next(request)
        record = request_record(request)  # the API key's own: its id, the path, the key
        if record is None or not IDEMPOTENCY_KEY_RE.fullmatch(key):
            return invalid_key()
        return await self._idempotency.run(request, call_next, record)

    def _check_auth(self, request: Request) -> Principal | Response:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return JSONResponse(
                error_body("unauthorized", "missing bearer token (Authorization: Bearer <token>)"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = self.keys.authenticate(given.strip())
        if principal is None and not self.keys.synced.is_set():
            # The keys are read from their bucket over NATS, not yet since this process
            # started: no key but the bootstrap one can be judged, so retry rather than refuse.
            return JSONResponse(
                error_body("unavailable", "the API keys are not loaded yet; retry shortly"),
                status_code=503,
                headers={"Retry-After": "2"},
            )
        if principal is None:
            return JSONResponse(
                error_body("forbidden", "invalid API key (unknown, expired or revoked)"),
                status_code=403,
            )
        return principal
