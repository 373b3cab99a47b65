"""HTTP conventions of every service: one error shape, bearer auth, Idempotency-Key, metrics.

Its parts: `errors` (the one error shape and the handlers that give it), `access_log` (one
line per request), `auth` (the API key scheme, the scope a route needs, the member a bound key
acts as), `rate_limit` (per-key write rates), `body_limit` (request body limits),
`idempotency` (Idempotency-Key records and ids derived from a key), `middleware` (what runs
around every request) and `openapi` (the document clients are generated from). Everything is
imported from here.
"""

from shared.http.access_log import AccessLog
from shared.http.auth import (
    API_KEY,
    RouteScopes,
    acting_member,
    principal_of,
    require,
    unbound_only,
)
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
    kept,
    new_id,
    record_id,
    request_record,
    requests_of,
)
from shared.http.middleware import KernelMiddleware
from shared.http.openapi import Error, error_responses, install_openapi, operation_id
from shared.http.rate_limit import DEFAULT_RATE_PER_MINUTE, WRITE_METHODS, WriteLimits

__all__ = [
    "API_KEY",
    "DEFAULT_RATE_PER_MINUTE",
    "ERROR_DETAILS_MAX",
    "ERROR_TEXT_MAX",
    "IDEMPOTENCY_KEY_RE",
    "IDEMPOTENCY_LEASE_MS",
    "IDEMPOTENCY_TTL",
    "MAX_BODY_BYTES",
    "MEMBER_KEYS",
    "REMEMBER_FOR_SECONDS",
    "WRITE_METHODS",
    "AccessLog",
    "ApiError",
    "BodyLimit",
    "Error",
    "KernelMiddleware",
    "RouteScopes",
    "WriteLimits",
    "acting_member",
    "concerned_member",
    "ensure_idempotency_indexes",
    "error_body",
    "error_responses",
    "forget_requests_of",
    "install_error_handlers",
    "install_openapi",
    "kept",
    "new_id",
    "not_found",
    "operation_id",
    "principal_of",
    "record_id",
    "request_record",
    "requests_of",
    "require",
    "unbound_only",
]
