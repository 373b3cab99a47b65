"""Bearer API keys on /v1: the security scheme, the scope a route needs, and who a key acts as.

`require(scope)` is a route's one declaration of its scope: OpenAPI shows it as the route's
security requirement, and the kernel (`KernelMiddleware`) checks it before anything else runs
for the request, a replayed Idempotency-Key answer included (`RouteScopes`).

`acting_member` is the one check of a key bound to a member: a route passes it the member a
body or a path names and gets the member the request acts as or reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.routing import Match

from shared.http.errors import ApiError
from shared.keys import SCOPES, Principal

#: The one security scheme every /v1 route declares, with the scope it needs (OpenAPI).
API_KEY = HTTPBearer(auto_error=False, scheme_name="apiKey", description="a Sarafan API key")
#: The attribute by which the kernel finds the scope a route declared with `require`.
_SCOPE_MARK = "sarafan_required_scope"


def missing_scope(scope: str) -> ApiError:
    """403 naming the scope the caller's key lacks (the kernel's and the route's answer)."""
    return ApiError(
        403,
        "forbidden",
        f"this API key lacks the scope {scope}",
        details={"missing_scope": scope},
    )


def require(scope: str) -> Any:
    """A route's dependency: the caller's key must hold `scope` (or `admin`), else 403 naming
    it. Visible in OpenAPI as the route's security requirement; the kernel checks it first."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(request: Request, _: Any = Security(API_KEY, scopes=[scope])) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None or not principal.allows(scope):
            raise missing_scope(scope)
        return principal

    setattr(check, _SCOPE_MARK, scope)
    return Depends(check)


def principal_of(request: Request) -> Principal:
    return request.state.principal  # type: ignore[no-any-return]


# -- the scope of the route a request goes to (checked by the kernel before the route runs) ------


def route_scope(route: APIRoute) -> str | None:
    """The scope the route declared with `require`, or None (a route that checks its own)."""
    return _scope_in(route.dependant.dependencies)


def _scope_in(dependencies: Iterable[Dependant]) -> str | None:
    for dependency in dependencies:
        scope = getattr(dependency.call, _SCOPE_MARK, None)
        if scope is None:
            scope = _scope_in(dependency.dependencies)
        if scope is not None:
            return str(scope)
    return None


class RouteScopes:
    """The scope each route of a service's routers declared, to check before the route runs.

    Read from the routers the service is built with (their routes carry their whole path),
    and matched as the router matches them: the first route whose path and method fit.
    """

    def __init__(self, routers: Iterable[APIRouter]) -> None:
        self.routes = [
            (route, route_scope(route))
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute)
        ]

    def match(self, request: Request) -> tuple[APIRoute | None, str | None]:
        """The route this request goes to and its scope (None, None: no such route; a route
        and None: one that checks its own scope)."""
        for route, scope in self.routes:
            match, _ = route.matches(request.scope)
            if match is Match.FULL:
                return route, scope
        return None, None

    def undeclared_posts(self) -> list[str]:
        """POST /v1 routes without `require`: their Idempotency-Key answers would be claimed
        and replayed before any scope check, so the service refuses to start with one."""
        return [
            route.path
            for route, scope in self.routes
            if route.path.startswith("/v1/") and "POST" in route.methods and scope is None
        ]


# -- keys bound to a member -------------------------------------------------------------------


def acting_member(request: Request, named: str | None, field: str = "member_id") -> str:
    """The member this request acts as (a write) or reads (one member's private resource).

    `named` is who the body or the path names, `field` where (for the messages). A key bound
    to a member acts as that member only: naming anyone else is 403 (`forbidden`), naming
    no one means the bound member. An unbound key (an integration acting for any member, the
    bootstrap key) acts as the member named, who must then be named (422 otherwise).

        author_id = acting_member(request, body.author_id, "author_id")
    """
    bound = principal_of(request).member_id
    if bound is None:
        if named is None:
            raise ApiError(
                422,
                "invalid_request",
                f"{field}: required (this API key acts for any member: name one)",
                details=[{"field": field, "message": "required"}],
            )
        return named
    if named is not None and named != bound:
        raise ApiError(
            403,
            "forbidden",
            f"this API key is bound to member {bound} and acts for that member only "
            f"({field} names another)",
            details={"bound_member_id": bound, "field": field},
        )
    return bound


def unbound_only(request: Request, what: str) -> None:
    """403 for a key bound to a member asking what only an integration may (making members)."""
    bound = principal_of(request).member_id
    if bound is not None:
        raise ApiError(
            403,
            "forbidden",
            f"this API key is bound to member {bound} and acts for that member only: "
            f"it cannot {what}",
            details={"bound_member_id": bound},
        )
