"""The one error shape of every 4xx and 5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shared.events import EventTooLarge
from shared.query import InvalidCursor, UnindexedFilter
from shared.store import TRANSIENT_DB_ERRORS

log = logging.getLogger("sarafan.http")

#: Validation messages name fields and say what is wrong; never echo a huge input back.
ERROR_TEXT_MAX = 300
ERROR_DETAILS_MAX = 20
#: The error code of each status Starlette raises itself (routing, the body parser).
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}
HTTP_MESSAGES = {404: "no such route", 405: "method not allowed on this route"}


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


def short(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = [
        {
            "field": short(".".join(str(p) for p in e["loc"] if p != "body")),
            "message": short(str(e["msg"])),
        }
        for e in exc.errors()[:ERROR_DETAILS_MAX]
    ]
    message = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details)
    return JSONResponse(error_body("invalid_request", message, details), status_code=422)


async def _too_large(_: Request, exc: EventTooLarge) -> JSONResponse:
    return JSONResponse(error_body("event_too_large", str(exc)), status_code=422)


async def _bad_cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
    return JSONResponse(error_body("invalid_cursor", str(exc)), status_code=422)


async def _unindexed(_: Request, exc: UnindexedFilter) -> JSONResponse:
    # A store built a filter that would scan: a bug here, never the client's fault.
    log.error("unindexed filter refused: %s", exc)
    return JSONResponse(error_body("internal", "internal error"), status_code=500)


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    message = HTTP_MESSAGES.get(exc.status_code, short(str(exc.detail)))
    return JSONResponse(
        error_body(HTTP_CODES.get(exc.status_code, "error"), message),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def unexpected_status(exc: BaseException) -> int:
    """The status an exception no route handled is answered with (`_unexpected`)."""
    return 503 if isinstance(exc, TRANSIENT_DB_ERRORS) else 500


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    if unexpected_status(exc) == 503:
        log.warning("database unavailable: %r", exc)
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )
    log.exception("unhandled error")
    return JSONResponse(error_body("internal", "internal error"), status_code=500)


#: Each exception a route may raise and its handler. Starlette's HTTPException, which FastAPI's
#: subclasses: routing's 404 and 405 and the body parser's 400 come in the one shape too.
HANDLERS: tuple[tuple[type[Exception], Any], ...] = (
    (ApiError, _api_error),
    (RequestValidationError, _invalid),
    (EventTooLarge, _too_large),
    (InvalidCursor, _bad_cursor),
    (UnindexedFilter, _unindexed),
    (HTTPException, _http),
    (Exception, _unexpected),
)


def install_error_handlers(app: FastAPI) -> None:
    """Every error a route can raise, in the one shape."""
    for exc_type, handler in HANDLERS:
        app.add_exception_handler(exc_type, handler)
