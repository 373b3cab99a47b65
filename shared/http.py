"""HTTP conventions of every service: one error shape, bearer auth, Idempotency-Key, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DocumentTooLarge
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.events import EventTooLarge, utcnow
from shared.keys import SCOPES, KeyRing, Principal
from shared.logs import correlation_id_var, key_id_var
from shared.metrics import Metrics
from shared.query import InvalidCursor, UnindexedFilter
from shared.store import TRANSIENT_DB_ERRORS, epoch_ms, is_duplicate_key

log = logging.getLogger("sarafan.http")

IDEMPOTENCY_TTL = timedelta(hours=48)  # docs/contract.md: kept at least 24 hours
#: A request that started this long ago without finishing died with its process.
IDEMPOTENCY_LEASE_MS = 30_000
#: How long a done request waits for MongoDB to keep its answer (it answers anyway after).
REMEMBER_FOR_SECONDS = 20.0
#: An Idempotency-Key is a client's token, not a payload: printable ASCII, bounded.
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
#: Request bodies larger than this are refused with 413 before they are read in full
#: (a route may allow more: `BodyLimit.larger`).
MAX_BODY_BYTES = 1024 * 1024
#: Fields of a request or response body that name the member a request concerns: its
#: Idempotency-Key record is indexed by the first one found, so erasure can delete it.
MEMBER_KEYS = ("member_id", "author_id", "by")
#: Validation messages name fields and say what is wrong; never echo a huge input back.
ERROR_TEXT_MAX = 300
ERROR_DETAILS_MAX = 20


class ApiError(Exception):
    """An error a client can act on, rendered as {"error": {"code", "message", "details"}}."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def not_found(what: str, ident: str) -> ApiError:
    shown = ident if len(ident) <= 100 else ident[:99] + "…"  # never echo a huge id back
    return ApiError(404, "not_found", f"{what} {shown} does not exist")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": _short(".".join(str(p) for p in e["loc"] if p != "body")),
                "message": _short(str(e["msg"])),
            }
            for e in exc.errors()[:ERROR_DETAILS_MAX]
        ]
        message = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details)
        return JSONResponse(error_body("invalid_request", message, details), status_code=422)

    @app.exception_handler(EventTooLarge)
    async def _too_large(_: Request, exc: EventTooLarge) -> JSONResponse:
        return JSONResponse(error_body("event_too_large", str(exc)), status_code=422)

    @app.exception_handler(InvalidCursor)
    async def _bad_cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        return JSONResponse(error_body("invalid_cursor", str(exc)), status_code=422)

    @app.exception_handler(UnindexedFilter)
    async def _unindexed(_: Request, exc: UnindexedFilter) -> JSONResponse:
        # A store built a filter that would scan: a bug here, never the client's fault.
        log.error("unindexed filter refused: %s", exc)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)

    # Starlette's, which FastAPI's subclasses: routing's 404 and 405 and the body parser's 400
    # come in the one error shape too.
    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {
            400: "invalid_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, _short(str(exc.detail))
        )
        return JSONResponse(
            error_body(code.get(exc.status_code, "error"), message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, TRANSIENT_DB_ERRORS):
            log.warning("database unavailable: %r", exc)
            return JSONResponse(
                error_body("unavailable", "the database is unavailable; retry shortly"),
                status_code=503,
                headers={"Retry-After": "2"},
            )
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


#: The one security scheme every /v1 route declares, with the scope it needs (OpenAPI).
API_KEY = HTTPBearer(auto_error=False, scheme_name="apiKey", description="a Sarafan API key")


def require(scope: str) -> Any:
    """A route's dependency: the caller's key must hold `scope` (or `admin`), else 403 naming
    it. Visible in OpenAPI as the route's security requirement."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(request: Request, _: Any = Security(API_KEY, scopes=[scope])) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None or not principal.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this API key lacks the scope {scope}",
                details={"missing_scope": scope},
            )
        return principal

    return Depends(check)


def principal_of(request: Request) -> Principal:
    return request.state.principal  # type: ignore[no-any-return]


def _short(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


class BodyLimit:
    """Refuses a request body over its limit with 413, counting as it arrives (a client that
    sends no Content-Length, or lies in it, is stopped at the limit, not after reading it all).

    `larger` allows more to the routes that take files (the members import).
    """

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, larger: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _refuse(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(error_body("too_large", f"the request body is over {limit} bytes")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def concerned_member(*bodies: bytes) -> str | None:
    """The member a request concerns, from its body or its response's (see MEMBER_KEYS)."""
    for body in bodies:
        try:
            value = json.loads(body) if body else None
        except ValueError:
            continue
        if isinstance(value, dict):
            for key in MEMBER_KEYS:
                found = value.get(key)
                if isinstance(found, str) and found:
                    return found
    return None


#: Namespace of ids derived from an Idempotency-Key (see `new_id`).
_KEYED = uuid.UUID("2f5d3c1e-8a47-4f0b-9c3e-5a1d7e6b4c20")


def new_id(request: Request) -> str:
    """The id of what this request creates: derived from its Idempotency-Key when it has one.

    A write can succeed while its answer is lost (the connection drops after the server
    committed it); the client retries with the same key, the kernel runs the request again
    (nothing was recorded as done), and the retry must find the first one's document, not
    create a second: with the same id its insert meets a duplicate key.
    """
    key = request.headers.get("Idempotency-Key")
    if not key:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_KEYED, f"{request.url.path}\n{key}"))


async def forget_requests_of(coll: AsyncCollection[dict[str, Any]], member_id: str) -> None:
    """Erasure: the Idempotency-Key records of requests about the member go (they keep the
    response, which may name the member or quote what they wrote)."""
    await coll.delete_many({"member_id": {"$eq": member_id}})


def _route_template(request: Request) -> str:
    """The route's path template (bounded label values), set by the router once it matched."""
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class KernelMiddleware(BaseHTTPMiddleware):
    """Auth on /v1, Idempotency-Key on POST /v1, correlation ids, request metrics."""

    def __init__(
        self,
        app: Any,
        *,
        metrics: Metrics,
        keys: KeyRing,
        idempotency: AsyncCollection[dict[str, Any]],
    ) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.keys = keys
        self.idempotency = idempotency

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
            return await self._authorised(request, call_next)
        finally:
            key_id_var.reset(audit)

    async def _authorised(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return await call_next(request)
        if not IDEMPOTENCY_KEY_RE.fullmatch(key):
            return JSONResponse(
                error_body(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 200 printable ASCII characters",
                ),
                status_code=422,
            )
        return await self._idempotent(request, call_next, key)

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
        if principal is None:
            return JSONResponse(
                error_body("forbidden", "invalid API key (unknown, expired or revoked)"),
                status_code=403,
            )
        return principal

    async def _idempotent(
        self, request: Request, call_next: RequestResponseEndpoint, key: str
    ) -> Response:
        body = await request.body()
        fingerprint = hashlib.sha256(body).hexdigest()
        record_id = f"{request.url.path}:{key}"
        claimed = await self._claim(record_id, fingerprint)
        if isinstance(claimed, Response):
            return claimed
        try:
            response = await call_next(request)
        except Exception:
            await self.idempotency.delete_one({"_id": record_id})
            raise
        chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
        content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        if response.status_code >= 500:
            # Nothing was done for good: let the retry run the request again.
            await self.idempotency.delete_one({"_id": record_id})
        else:
            done: dict[str, Any] = {
                "state": "done",
                "status": response.status_code,
                "body": content.decode("utf-8", "replace"),
                "media_type": response.media_type or "application/json",
            }
            if "no-store" in response.headers.get("Cache-Control", ""):
                # A secret shown once (a new API key's token): the record says the request was
                # done, so a repeat does nothing twice, but the answer is kept nowhere.
                done.update(body="", shown_once=True)
            member = concerned_member(body, content)
            if member is not None:
                done["member_id"] = member
            await self._remember(record_id, done)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(content, status_code=response.status_code, headers=headers)

    async def _remember(self, record_id: str, done: dict[str, Any]) -> None:
        """Keep the answer for replays. The work is done whatever happens here, so the client
        gets its answer even if this fails: an error now would make it retry, and a retry
        that takes the key over after its lease would do the work a second time. MongoDB
        away for a moment (a restart) is waited out."""
        delay = 0.1
        deadline = time.monotonic() + REMEMBER_FOR_SECONDS
        while True:
            try:
                await self.idempotency.update_one({"_id": record_id}, {"$set": done})
                return
            except DocumentTooLarge:
                # Too big to keep: a retry runs again rather than finding it in progress.
                with contextlib.suppress(Exception):
                    await self.idempotency.delete_one({"_id": record_id})
                return
            except TRANSIENT_DB_ERRORS as exc:
                if time.monotonic() > deadline:
                    log.warning("could not keep the answer of %s: %r", record_id, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _claim(self, record_id: str, fingerprint: str) -> Response | None:
        """None when this request may run; otherwise the answer to give (replay, 409, 422)."""
        now_ms = epoch_ms(utcnow())
        try:
            await self.idempotency.insert_one(
                {
                    "_id": record_id,
                    "fingerprint": fingerprint,
                    "state": "started",
                    "created_at": utcnow(),
                    "started_ms": now_ms,
                    "created_ms": now_ms,
                }
            )
            return None
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
        record = await self.idempotency.find_one({"_id": record_id})
        if record is None:
            return JSONResponse(
                error_body("conflict", "request with this Idempotency-Key changed; retry"),
                status_code=409,
                headers={"Retry-After": "1"},
            )
        if record["fingerprint"] != fingerprint:
            return JSONResponse(
                error_body(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request body",
                ),
                status_code=422,
            )
        if record.get("state") == "done" and record.get("shown_once"):
            return JSONResponse(
                error_body(
                    "answer_not_kept",
                    "this request was done; its answer held a secret shown once and not kept",
                ),
                status_code=409,
            )
        if record.get("state") == "done":
            return Response(
                record["body"].encode(),
                status_code=int(record["status"]),
                media_type=record.get("media_type", "application/json"),
                headers={"Idempotent-Replayed": "true"},
            )
        # Started but never finished: a process that died mid-request (or lost its database)
        # leaves this behind. After the lease the retry takes the key over and runs again, so
        # a client can always retry; the request's own rules (a unique email, say) still hold.
        started = int(record.get("started_ms") or 0)
        if now_ms - started > IDEMPOTENCY_LEASE_MS:
            taken = await self.idempotency.find_one_and_update(
                {"_id": record_id, "state": "started", "started_ms": record.get("started_ms")},
                {"$set": {"started_ms": now_ms}},
            )
            if taken is not None:
                return None
        return JSONResponse(
            error_body("conflict", "a request with this Idempotency-Key is still in progress"),
            status_code=409,
            headers={"Retry-After": "1"},
        )


async def ensure_idempotency_indexes(coll: AsyncCollection[dict[str, Any]]) -> None:
    await coll.create_index("created_at", expireAfterSeconds=int(IDEMPOTENCY_TTL.total_seconds()))
    await coll.create_index("member_id", sparse=True)
    await coll.create_index("created_ms")
