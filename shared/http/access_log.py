"""The access log: one structured line per HTTP request, whatever answered it.

Each line has the method, the route's template (`/v1/members/{member_id}`), the status, the
duration in milliseconds, the correlation id and the id of the API key (`bootstrap` for the
operator's; none before authentication). Never the token, the query string nor the path as
sent: the template names no one, and a path or a query can carry whatever a client put there (an
email address in a filter). In the JSON log format each field is a key of the line; in the text
format the line reads `GET /v1/members/{member_id} 200 3.1 ms` with the fields after it.

It is the outermost layer, so a request refused before the routes run (a body over its limit)
is logged too; the probes' and the scrapes' successes are debug lines, their failures are not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http.errors import unexpected_status

log = logging.getLogger("sarafan.access")

#: Asked every few seconds by orchestrators and Prometheus: a success is a debug line.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    """ASGI middleware writing one `sarafan.access` line per request (see the module)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        #: The service's routes (its routers', which carry their whole path), to name the
        #: route of a request refused before routing.
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": None, "correlation": None}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["correlation"] = _header(message.get("headers"), b"x-correlation-id")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            # Not answered here: the server's error handler answers it (500, or 503).
            answer["status"] = answer["status"] or unexpected_status(exc)
            raise
        finally:
            self._log(scope, answer, (time.perf_counter() - started) * 1000)

    def _log(self, scope: Scope, answer: dict[str, Any], duration_ms: float) -> None:
        route = self._route(scope)
        status = int(answer["status"] or 500)
        principal = (scope.get("state") or {}).get("principal")
        correlation = answer["correlation"] or _header(scope.get("headers"), b"x-correlation-id")
        quiet = route in QUIET_ROUTES and status < 400
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %d %.1f ms",
            scope["method"],
            route,
            status,
            duration_ms,
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 1),
                "key_id": getattr(principal, "key_id", None),
                "correlation_id": correlation,
            },
        )

    def _route(self, scope: Scope) -> str:
        """The template of the route the request went to (the router sets it in the scope),
        else of the route it would have gone to, else `unmatched`."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")[:200]
    return None
