"""HTTP conventions of every service: one error shape, bearer auth, Idempotency-Key, metrics.

Its parts: `errors` (the one error shape and the handlers that give it), `auth` (the API key
scheme and the scope a route needs), `body_limit` (request body limits), `idempotency`
(Idempotency-Key records and ids derived from a key) and `middleware` (what runs around every
request). Everything is imported from here.
"""

from shared.http.auth import API_KEY, principal_of, require
from shared.http.body_limit import MAX_BODY_BYTES, BodyLimit
from shared.http.errors import (
    ERROR_DETAILS_MAX,
    ERROR_TEXT_MAX,
    ApiError,
    error_body,
    install_error_handlers,
    not_found,
)
from shared.http.idempotency import (
    IDEMPOTENCY_KEY_RE,
    IDEMPOTENCY_LEASE_MS,
    IDEMPOTENCY_TTL,
    MEMBER_KEYS,
    REMEMBER_FOR_SECONDS,
    concerned_member,
    ensure_idempotency_indexes,
    forget_requests_of,
    new_id,
)
from shared.http.middleware import KernelMiddleware

__all__ = [
    "API_KEY",
    "ERROR_DETAILS_MAX",
    "ERROR_TEXT_MAX",
    "IDEMPOTENCY_KEY_RE",
    "IDEMPOTENCY_LEASE_MS",
    "IDEMPOTENCY_TTL",
    "MAX_BODY_BYTES",
    "MEMBER_KEYS",
    "REMEMBER_FOR_SECONDS",
    "ApiError",
    "BodyLimit",
    "KernelMiddleware",
    "concerned_member",
    "ensure_idempotency_indexes",
    "error_body",
    "forget_requests_of",
    "install_error_handlers",
    "new_id",
    "not_found",
    "principal_of",
    "require",
]
