"""The OpenAPI document a client can be generated from: the one error shape, every status each
operation answers, and stable operation ids.

FastAPI documents a 422 `{"detail": [...]}` (HTTPValidationError) on every route with a
parameter, and nothing of what the kernel answers. `complete` corrects the generated document,
in the kernel, so every service gets it without declarations on its routes:

- the component `Error` (`{"error": {"code", "message", "details"}}`), the body of every 4xx and
  5xx, in place of FastAPI's HTTPValidationError (which is removed);
- the statuses an operation answers because of what it is (`kernel_statuses`): every `/v1`
  route 401, 403 and 503; a write 429; a `POST` 409 and 422 for its Idempotency-Key (declared
  as a header parameter); a body 400 (unreadable), 413 and 422; a parameter 422; a path id 404;
- each with an example per error code, and `Retry-After` where it is sent.

A route declares only what it answers beyond that (a 409 or 412 its use case raises) with
`responses=error_responses({409: {"contact_taken": "…"}})`; its codes join the kernel's.
`operation_id(service)` names each operation `<service>_<route function name>`: unique across
the services, and stable as long as the function keeps its name (a test compares the ids with
a committed list).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from shared.http.idempotency import IDEMPOTENCY_KEY_RE

REF = "#/components/schemas/"
WRITES = frozenset({"post", "put", "patch", "delete"})
#: FastAPI's validation error schemas, replaced by Error.
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


class FieldProblem(BaseModel):
    """One problem of an invalid request: the field (dotted path) and what is wrong with it."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """What went wrong: a machine code to act on, words for people, details by code."""

    code: str = Field(description="what a client acts on: `not_found`, `contact_taken`, ...")
    message: str = Field(description="for people; may change between versions")
    details: list[FieldProblem | str] | dict[str, Any] | None = Field(
        None,
        description="422 `invalid_request`: one {field, message} per problem; otherwise what "
        "the code documents (`missing_scope`, `bound_member_id`, `rate_per_minute`, ...)",
    )


class Error(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


#: Each status the kernel documents: what it means, and an example (message, details) of each
#: error code it answers with.
STATUSES: dict[int, tuple[str, dict[str, tuple[str, Any]]]] = {
    400: (
        "The request body could not be read at all (not UTF-8, cut short).",
        {"invalid_request": ("There was an error parsing the body", None)},
    ),
    401: (
        "No API key (`Authorization: Bearer <key>` is missing).",
        {"unauthorized": ("missing bearer token (Authorization: Bearer <token>)", None)},
    ),
    403: (
        "The key is unknown, expired or revoked, lacks the route's scope "
        "(`details.missing_scope`), or is bound to another member (`details.bound_member_id`).",
        {
            "forbidden": (
                "this API key lacks the scope members:read",
                {"missing_scope": "members:read"},
            )
        },
    ),
    404: (
        "What the path names does not exist.",
        {"not_found": ("member m_0123456789 does not exist", None)},
    ),
    409: (
        "The request conflicts with the current state (the code says how). On a POST, also: "
        "a request with the same Idempotency-Key is still running (`conflict`, retry after "
        "`Retry-After`), or its answer held a secret and was not kept (`answer_not_kept`).",
        {
            "conflict": ("a request with this Idempotency-Key is still running; retry", None),
        },
    ),
    412: ("The `If-Match` version is no longer the current one.", {}),
    413: (
        "The request body is over its limit.",
        {"too_large": ("the request body is over 1048576 bytes", None)},
    ),
    415: ("The request body is not of a media type the route takes.", {}),
    422: (
        "The request is invalid: `invalid_request` lists one {field, message} per problem; "
        "other codes name a rule.",
        {
            "invalid_request": (
                "display_name: Field required",
                [{"field": "display_name", "message": "Field required"}],
            )
        },
    ),
    429: (
        "The API key is over its write rate; retry after `Retry-After` seconds.",
        {
            "rate_limited": (
                "this API key may make 120 writes a minute to this service; retry in 1 s",
                {"rate_per_minute": 120},
            )
        },
    ),
    503: (
        "Unavailable for a moment (MongoDB, or the API keys not loaded yet); retry after "
        "`Retry-After` seconds.",
        {"unavailable": ("the database is unavailable; retry shortly", None)},
    ),
}
#: Codes the kernel adds to a POST /v1 operation's statuses (its Idempotency-Key).
IDEMPOTENCY_CODES: dict[int, dict[str, tuple[str, Any]]] = {
    422: {
        "idempotency_key_reused": (
            "this Idempotency-Key was used with a different request body",
            None,
        ),
        "invalid_idempotency_key": (
            "Idempotency-Key must be 1 to 200 printable ASCII characters",
            None,
        ),
    },
}
RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a repeat with the same API key, key and body returns the first answer "
    "(`Idempotent-Replayed: true`); kept 48 hours",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern},
}


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document as the app's OpenAPI (generated once, on first use).

    Make the app with `generate_unique_id_function=operation_id(service)`."""
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(generated())  # FastAPI keeps what it generated as app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def operation_id(service: str) -> Callable[[APIRoute], str]:
    """FastAPI's `generate_unique_id_function`: `<service>_<route function name>`."""

    def unique_id(route: APIRoute) -> str:
        return f"{service}_{route.name}"

    return unique_id


def error_responses(codes: Mapping[int, Mapping[str, str]]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the errors it answers beyond the kernel's: for each status,
    its codes with an example message."""
    return {
        status: _response(status, {code: (text, None) for code, text in by_code.items()})
        for status, by_code in codes.items()
    }


def kernel_statuses(path: str, method: str, operation: Mapping[str, Any]) -> dict[int, Any]:
    """The statuses an operation answers because of what it is, and their codes."""
    parameters = operation.get("parameters") or []
    body = "requestBody" in operation
    statuses: dict[int, dict[str, tuple[str, Any]]] = {}
    if path.startswith("/v1/"):
        for status in (401, 403, 503):
            statuses[status] = STATUSES[status][1]
        if method in WRITES:
            statuses[429] = STATUSES[429][1]
        if method == "post":
            statuses[409] = STATUSES[409][1]
            statuses[422] = {**STATUSES[422][1], **IDEMPOTENCY_CODES[422]}
    if body:
        statuses[400] = STATUSES[400][1]
        statuses[413] = STATUSES[413][1]
    if body or parameters:
        statuses[422] = {**STATUSES[422][1], **statuses.get(422, {})}
    if any(p.get("in") == "path" for p in parameters):
        statuses[404] = STATUSES[404][1]
    return statuses


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """The document FastAPI generated, with the kernel's statuses and the one error shape."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_VALIDATION:
        schemas.pop(name, None)
    error = Error.model_json_schema(ref_template=REF + "{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["Error"] = error
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path.startswith("/v1/") and method == "post":
                _add_parameter(operation, IDEMPOTENCY_KEY)
            responses = operation["responses"]
            _refit_validation(responses)
            for status, codes in kernel_statuses(path, method, operation).items():
                _merge(responses, status, codes)
            operation["responses"] = dict(sorted(responses.items()))
    return doc


def _add_parameter(operation: dict[str, Any], parameter: Mapping[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == parameter["name"].lower() for p in parameters):
        parameters.append(copy.deepcopy(dict(parameter)))


def _response(status: int, codes: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """An error response: the Error schema, an example per code, Retry-After where sent."""
    response: dict[str, Any] = {
        "description": STATUSES.get(status, ("Error.", {}))[0],
        "content": {
            "application/json": {"schema": {"$ref": REF + "Error"}, "examples": _examples(codes)}
        },
    }
    if status in (409, 429, 503):
        response["headers"] = {"Retry-After": dict(RETRY_AFTER)}
    return response


def _examples(codes: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    examples = {}
    for code, (message, details) in codes.items():
        error = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        examples[code] = {"summary": code, "value": {"error": error}}
    return examples


def _merge(responses: dict[str, Any], status: int, codes: Mapping[str, tuple[str, Any]]) -> None:
    """Add the kernel's codes to the response the route declared, or declare it."""
    kernel = _response(status, codes)
    declared = responses.get(str(status))
    if declared is None:
        responses[str(status)] = kernel
        return
    media = declared.setdefault("content", {}).setdefault("application/json", {})
    media["schema"] = {"$ref": REF + "Error"}
    examples = media.setdefault("examples", {})
    for code, example in kernel["content"]["application/json"]["examples"].items():
        examples.setdefault(code, example)
    declared.setdefault("headers", {}).update(kernel.get("headers", {}))
    if not declared["headers"]:
        del declared["headers"]


def _refit_validation(responses: dict[str, Any]) -> None:
    """FastAPI's 422 (HTTPValidationError) replaced by the one error shape."""
    schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
    if (schema or {}).get("$ref", "").endswith(FASTAPI_VALIDATION[0]):
        responses["422"] = _response(422, {})


def operation_ids(doc: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(operationId, method, path) of every operation of the document."""
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                yield operation["operationId"], method.upper(), path
