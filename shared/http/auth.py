"""Bearer API keys on /v1: the security scheme and the scope a route needs."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from shared.http.errors import ApiError
from shared.keys import SCOPES, Principal

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
