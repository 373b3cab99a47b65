"""The server span of every HTTP request (an ASGI middleware, outermost in the app)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.tracing.provider import state, tracer
from shared.tracing.spans import as_current, context_from, ending

#: Probes and scrapes: every few seconds, and nothing to follow.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class TraceRequests:
    """ASGI middleware: a server span per HTTP request (the caller's `traceparent` continued),
    named by its route template once the router matched it."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not state.processors or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        await self._traced(scope, receive, send)

    async def _traced(self, scope: Any, receive: Any, send: Any) -> None:
        method = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        span = tracer(self.service).start_span(
            method,
            context=context_from(headers) or Context(),
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, headers),
        )
        answered: dict[str, Any] = {}

        async def sending_answer(message: Any) -> None:
            if message["type"] == "http.response.start":
                answered.update(message)
            await send(message)

        with ending([span]), as_current(span):
            try:
                await self.app(scope, receive, sending_answer)
            finally:
                _answered(span, method, scope, answered)


def _request_attributes(scope: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    attributes = {
        "http.request.method": scope["method"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    if agent := headers.get("user-agent"):
        attributes["user_agent.original"] = agent
    return attributes


def _answered(span: Span, method: str, scope: Any, answered: Mapping[str, Any]) -> None:
    """Name the span by its route, and record the status (5xx is an error, 4xx the caller's)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    # url.path is the route template, never the path as sent: paths carry credentials (a
    # check-in page's or an unsubscribe link's token) and ids a trace store need not keep.
    span.set_attribute("url.path", template or "unmatched")
    if template:
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
    status = answered.get("status")
    if status is None:
        return
    span.set_attribute("http.response.status_code", status)
    for name, value in answered.get("headers", ()):
        if name.lower() == b"x-correlation-id":
            span.set_attribute("sarafan.correlation_id", value.decode("latin-1"))
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
