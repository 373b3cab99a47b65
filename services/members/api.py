"""Members' HTTP routes: parse the request, call the use case, map its errors to 4xx/5xx.

The rules are in domain.py, what each request does in usecases.py; a route only reads the
request (body, path, query, headers, the caller's key), calls a use case of the service's
context (`members: MembersDep`, context.py) and shapes the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from pydantic import ValidationError

from services.members import domain, usecases
from services.members.api_keys import revoke_keys_of
from services.members.context import Members, MembersDep
from services.members.listing import LIST_KEY_RE
from services.members.schemas import (
    JoinRequest,
    MemberList,
    MemberOut,
    PatchRequest,
    ReferralList,
    ReferralOut,
)
from services.members.store import ContactTaken
from services.members.violations import RuleViolation
from shared import query
from shared.events import Role
from shared.http import (
    API_KEY,
    ApiError,
    acting_member,
    error_responses,
    not_found,
    principal_of,
    request_record,
    require,
    unbound_only,
)
from shared.keys import ADMIN
from shared.tags import normalise_tags

log = logging.getLogger("sarafan.members.api")

router = APIRouter(prefix="/v1", tags=["members"])

#: Ids this service hands out are uuids; the bound keeps an absurd path out of the queries.
MemberId = Annotated[str, Path(max_length=100, description="the member_id returned at join")]
#: Bounds of the list filters (a region and a tag are bounded the same way in a profile).
REGION_MAX = 100
INTEREST_MAX = 100
T = TypeVar("T")
#: The scopes of this service's routes (shared/keys.py says what each allows).
JOIN, READ, WRITE, ERASE = "members:join", "members:read", "members:write", "members:erase"


def may_grant(request: Request) -> bool:
    """Whether the caller's key may give the coordinator and staff roles."""
    return principal_of(request).allows(ADMIN)


def _lacks(scope: str, message: str, **details: Any) -> ApiError:
    """403 naming the scope the caller's key lacks (the kernel's answer for a route's scope)."""
    return ApiError(403, "forbidden", message, details={"missing_scope": scope, **details})


def contact_taken() -> ApiError:
    """A join's answer when a contact is taken, whichever it was: a sign-up key must not learn
    whether an email, a phone or a Telegram handle belongs to a member."""
    return ApiError(409, "contact_taken", "one of these contacts already belongs to a member")


@contextmanager
def answers(*, uniform_contacts: bool = False) -> Iterator[None]:
    """The HTTP answer of each refusal a use case raises; with `uniform_contacts` (a join) a
    taken contact is not named."""
    try:
        yield
    except RuleViolation as exc:
        raise ApiError(422, exc.code, exc.message) from exc
    except ContactTaken as exc:
        if uniform_contacts:
            raise contact_taken() from exc
        raise ApiError(
            409, f"{exc.kind}_taken", f"another member already has this {exc.kind}"
        ) from exc
    except usecases.RolesNeedAdmin as exc:
        raise _lacks(
            ADMIN,
            f"giving the {' and '.join(exc.roles)} role needs the scope {ADMIN}, "
            "which this API key lacks",
            roles=exc.roles,
        ) from exc
    except usecases.MemberNotFound as exc:
        raise not_found("member", exc.member_id) from exc
    except usecases.VersionChanged as exc:
        raise ApiError(412, "version_changed", str(exc)) from exc
    except usecases.MemberClosed as exc:
        raise ApiError(409, "member_left", str(exc)) from exc
    except usecases.KeptChanging as exc:
        raise ApiError(409, "conflict", "the member kept changing; retry") from exc
    except usecases.NoCodeFound as exc:
        raise ApiError(503, "unavailable", "could not allocate a referral code; retry") from exc


@router.post("/members", status_code=201, response_model=MemberOut, dependencies=[require(JOIN)])
async def join(body: JoinRequest, request: Request, members: MembersDep) -> MemberOut:
    """Join the community (explicit consent, at least one contact, optional referral code).

    Joining as coordinator or staff also needs the scope `admin` (403 naming it otherwise):
    a sign-up page's key lets people join, not give themselves authority. A contact another
    member has is one answer whichever it was (409 `contact_taken`), checked before the
    referral code: the answers tell no one who is a member or whose address owns a code. A key
    bound to a member acts as that member only: it makes no other member (403)."""
    unbound_only(request, "make members")
    cmd = usecases.JoinCommand(
        profile=body.model_dump(include=set(domain.PROFILE_FIELDS)),
        email=body.email,
        phone=body.phone,
        telegram=body.telegram,
        terms=body.consent.terms,
        marketing=body.consent.marketing,
        referral_code=body.referral_code,
        # The kernel's record of this request (shared/http/idempotency.py) keeps the response.
        idempotency_record=request_record(request),
    )
    with answers(uniform_contacts=True):
        member = await members.use_cases.join(cmd, may_grant=may_grant(request))
    return MemberOut.from_doc(member)


@router.get("/members", response_model=MemberList, dependencies=[require(READ)])
async def list_members(
    request: Request,
    members: MembersDep,
    region: Annotated[str | None, Query(max_length=REGION_MAX, description="exact region")] = None,
    role: Annotated[Role | None, Query()] = None,
    interest: Annotated[
        str | None, Query(max_length=INTEREST_MAX, description="one interest tag")
    ] = None,
    status: Annotated[
        str, Query(pattern="^(active|left)$", description="active (default) or left")
    ] = "active",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> MemberList:
    """Members in join order; the cursor stays right while others join (keyset pagination)."""
    if interest:
        # Listed interests are normalised tags; input that normalises to nothing matches none.
        interest = next(iter(normalise_tags([interest])), interest)
    after = query.decode_cursor(cursor, LIST_KEY_RE) if cursor else None
    docs = await members.store.lists.page(
        status,
        after,
        limit + 1,
        region=region or None,
        role=role,
        interest=interest or None,
    )
    page = docs[:limit]
    return MemberList(
        items=_readable(members, page, MemberOut.from_doc),
        next_cursor=_next_cursor(page) if len(docs) > limit else None,
    )


def _readable(
    members: Members, docs: Iterable[dict[str, Any]], convert: Callable[[dict[str, Any]], T]
) -> list[T]:
    """The documents of a page a client can be shown. One that cannot be read (written by
    hand, by an old version, half-migrated) is skipped, logged by id and counted, so it
    never takes the whole list down with it."""
    skipped = members.skipped
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            # Counted in the kernel's sarafan_documents_skipped_total; logged here at every
            # read (a list is read by people, who may ask why an entry is missing).
            skipped.counter.labels(skipped.service, "members").inc()
            # The id and what is wrong, never the values: they may be personal data.
            log.warning(
                "list skipped unreadable member document %s (%s)",
                str(doc.get("_id"))[:100],
                _what_is_wrong(exc),
            )
    return items


def _what_is_wrong(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:10]
        )
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return type(exc).__name__


def _next_cursor(page: list[dict[str, Any]]) -> str | None:
    """The cursor after a page: the list key of its last document (every listed document
    has one, the query ranges over it; an odd one is passed over, not a 500)."""
    for doc in reversed(page):
        key = doc.get("list_key")
        if isinstance(key, str) and LIST_KEY_RE.fullmatch(key):
            return query.encode_cursor(key)
    return None


@router.get("/members/{member_id}", response_model=MemberOut, dependencies=[require(READ)])
async def get_member(
    member_id: MemberId, request: Request, response: Response, members: MembersDep
) -> MemberOut:
    """One member's profile (with a key bound to a member: that member's only)."""
    doc = await members.store.get(acting_member(request, member_id))
    if doc is None:
        raise not_found("member", member_id)
    response.headers["ETag"] = f'"{doc.get("version", 1)}"'
    return MemberOut.from_doc(doc)


def _sent(body: PatchRequest) -> dict[str, Any]:
    """The PATCH fields sent (only those), consent as the choices sent."""
    requested: dict[str, Any] = {
        f: getattr(body, f) for f in body.model_fields_set if f != "consent"
    }
    if body.consent is not None:
        requested["consent"] = body.consent.model_dump(exclude_unset=True)
    return requested


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise ApiError(422, "invalid_if_match", "If-Match must be a member version") from exc


@router.patch(
    "/members/{member_id}",
    response_model=MemberOut,
    dependencies=[require(WRITE)],
    responses=error_responses(
        {
            409: {
                "email_taken": "another member already has this email",
                "member_left": "member m_01 has left",
                "conflict": "the member kept changing; retry",
            },
            412: {"version_changed": "member m_01 is at version 4, not 3"},
        }
    ),
)
async def update_member(
    member_id: MemberId,
    body: PatchRequest,
    request: Request,
    response: Response,
    members: MembersDep,
    if_match: Annotated[str | None, Header(description="a version: 412 if it changed")] = None,
) -> MemberOut:
    """Change profile, contacts or consent; emits member-updated with exactly what changed.

    Giving the member the coordinator or staff role also needs the scope `admin`. A key
    bound to a member changes that member only."""
    member_id = acting_member(request, member_id)
    expected = _if_match(if_match)
    with answers():
        doc = await members.use_cases.change_profile(
            member_id, _sent(body), expected_version=expected, may_grant=may_grant(request)
        )
    response.headers["ETag"] = f'"{doc.get("version", 1)}"'
    return MemberOut.from_doc(doc)


async def _leave_scope(
    request: Request,
    erase: Annotated[
        bool,
        Query(description="also erase personal data everywhere (needs the scope members:erase)"),
    ] = False,
    _key: Any = Security(API_KEY, scopes=[WRITE]),
) -> bool:
    """The scope of a leave depends on its query: members:write to leave, members:erase to
    erase (OpenAPI names members:write, the route's; its description says the rest)."""
    needed = ERASE if erase else WRITE
    if not principal_of(request).allows(needed):
        raise _lacks(needed, f"this API key lacks the scope {needed}")
    return erase


@router.delete("/members/{member_id}", status_code=204)
async def leave(
    member_id: MemberId,
    request: Request,
    erase: Annotated[bool, Depends(_leave_scope)],
    members: MembersDep,
) -> Response:
    """Leave (member-left); with erase=true the profile goes and their messages are erased.

    Leaving needs the scope `members:write`; `erase=true` needs `members:erase` instead (a key
    with only members:write asking erasure gets 403 naming members:erase).

    Repeats are harmless: leaving twice, or erasing an erased member, is 204 and emits
    nothing. An id that never existed is 404. A key bound to a member leaves as that member only,
    and every key bound to the member is revoked.
    """
    member_id = acting_member(request, member_id)
    with answers():
        await members.use_cases.leave(member_id, erase)
    await revoke_keys_of(members, member_id)
    if erase:
        members.scrubber.kick()  # the store's files keep no copy (shared/scrub.py)
    return Response(status_code=204)


@router.get(
    "/members/{member_id}/referrals", response_model=ReferralList, dependencies=[require(READ)]
)
async def referrals(
    member_id: MemberId,
    request: Request,
    members: MembersDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query()] = None,
) -> ReferralList:
    """Who joined with this member's code (erased ones stay, anonymous, so counts hold).
    With a key bound to a member: that member's referrals only."""
    member_id = acting_member(request, member_id)
    store = members.store
    if await store.get(member_id) is None:
        raise not_found("member", member_id)
    after = query.decode_cursor(cursor, LIST_KEY_RE) if cursor else None
    docs = await store.lists.referrals_page(member_id, after, limit + 1)
    page = docs[:limit]
    return ReferralList(
        items=_readable(members, page, ReferralOut.from_doc),
        next_cursor=_next_cursor(page) if len(docs) > limit else None,
        total=await store.lists.count_referrals(member_id),
    )
