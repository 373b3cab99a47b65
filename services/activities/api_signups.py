"""Sign-up routes: sign up for a shift, read, confirm ("I'm coming") and cancel a sign-up, a
shift's list, a member's record. Every route that acts for a member names them through
the kernel's `acting_member`: a key bound to a member acts as that member only (403 for
anyone else), on sign-ups, confirmations, cancellations, self check-in and the reads of one
member's sign-ups and record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response

from services.activities.api import READ, SIGNUP, ActivityId
from services.activities.context import Activities, ActivitiesDep, refusals
from services.activities.schemas import (
    MemberRecord,
    MemberRecordItem,
    ShiftSignupList,
    ShiftSignupOut,
    SignupIn,
    SignupOut,
)
from services.activities.usecases import BY_MEMBER, BY_ORGANISER
from shared.documents import Doc
from shared.http import (
    ApiError,
    acting_member,
    error_responses,
    new_id,
    not_found,
    principal_of,
    require,
)
from shared.limits import Ident
from shared.query import ORDER_KEY_RE, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["activities"])
T = TypeVar("T")
SignupId = Annotated[str, Path(min_length=1, max_length=100)]
ShiftId = Annotated[str, Path(min_length=1, max_length=100)]


async def _signup(a: Activities, signup_id: str) -> Doc:
    doc = await a.store.signup(signup_id)
    if doc is None:
        raise not_found("sign-up", signup_id)
    return doc


@router.post(
    "/activities/{activity_id}/shifts/{shift_id}/signups",
    status_code=201,
    response_model=SignupOut,
    dependencies=[require(SIGNUP)],
    responses={200: {"model": SignupOut, "description": "the member was signed up already"}},
)
async def sign_up(
    activity_id: ActivityId,
    shift_id: ShiftId,
    body: SignupIn,
    request: Request,
    a: ActivitiesDep,
    response: Response,
) -> SignupOut:
    """Sign a member up: confirmed while there is room, else waitlisted (with a position).
    A repeat answers the existing sign-up with 200."""
    member_id = acting_member(request, body.member_id)
    signup_id = "su_" + new_id(request).replace("-", "")
    with refusals():
        result = await a.signups.sign_up(activity_id, shift_id, member_id, signup_id)
    if not result.created:
        response.status_code = 200
    return SignupOut.from_doc(result.signup, result.position)


@router.get("/signups/{signup_id}", response_model=SignupOut, dependencies=[require(READ)])
async def get_signup(signup_id: SignupId, request: Request, a: ActivitiesDep) -> SignupOut:
    with refusals():
        signup, position = await a.signups.get(signup_id)
    acting_member(request, signup["member_id"])
    return SignupOut.from_doc(signup, position)


@router.post(
    "/signups/{signup_id}/confirm", response_model=SignupOut, dependencies=[require(SIGNUP)]
)
async def confirm_signup(signup_id: SignupId, request: Request, a: ActivitiesDep) -> SignupOut:
    """ "I'm coming": recorded once (sign-up-changed `confirmed-by-member`)."""
    signup = await _signup(a, signup_id)
    acting_member(request, signup["member_id"])
    with refusals():
        after = await a.signups.confirm(signup)
    return SignupOut.from_doc(after)


@router.delete(
    "/signups/{signup_id}",
    response_model=SignupOut,
    dependencies=[require(SIGNUP)],
    responses=error_responses(
        {
            409: {
                "attendance_recorded": "this member's attendance is recorded already",
                "not_a_sign_up": "a walk-in holds no place to cancel",
                "shift_ended": "this shift has ended",
                "retry": "the sign-up changed meanwhile; retry",
            }
        }
    ),
)
async def cancel_signup(
    signup_id: SignupId,
    request: Request,
    a: ActivitiesDep,
    by: Annotated[
        Literal["member", "organiser"],
        Query(description="organiser: cancelled by the organisers (needs activities:manage)"),
    ] = "member",
) -> SignupOut:
    """Cancel a sign-up ("I can't"); the first waitlisted member takes the freed seat."""
    signup = await _signup(a, signup_id)
    if by == "organiser":
        if not principal_of(request).allows("activities:manage"):
            raise ApiError(
                403,
                "forbidden",
                "this API key lacks the scope activities:manage",
                details={"missing_scope": "activities:manage"},
            )
        reason = BY_ORGANISER
    else:
        acting_member(request, signup["member_id"])
        reason = BY_MEMBER
    with refusals():
        after = await a.signups.cancel(signup, reason)
    return SignupOut.from_doc(after)


@router.get(
    "/activities/{activity_id}/shifts/{shift_id}/signups",
    response_model=ShiftSignupList,
    dependencies=[require(READ)],
)
async def shift_signups(
    activity_id: ActivityId,
    shift_id: ShiftId,
    request: Request,
    a: ActivitiesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> ShiftSignupList:
    """Everyone on a shift (sign-ups and walk-ins, in the order they came), with their status,
    attendance and name: the coordinator's list."""
    after = decode_cursor(cursor, ORDER_KEY_RE) if cursor else ""
    with refusals():
        page, names, more = await a.signups.on_shift(activity_id, shift_id, after, limit)

    def item(doc: Doc) -> ShiftSignupOut:
        name = names.get(doc["member_id"], {}).get("display_name")
        return ShiftSignupOut(**SignupOut.from_doc(doc).model_dump(), display_name=name)

    items = _readable(a, request, page, item)
    next_cursor = encode_cursor(page[-1]["member_key"]) if more else None
    return ShiftSignupList(items=items, next_cursor=next_cursor)


@router.get(
    "/members/{member_id}/activities", response_model=MemberRecord, dependencies=[require(READ)]
)
async def member_record(
    member_id: Annotated[Ident, Path()],
    request: Request,
    a: ActivitiesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> MemberRecord:
    """The member's sign-ups, attendance and hours, newest first."""
    member_id = acting_member(request, member_id)
    member = await a.store.member(member_id)
    if member is None or member.get("status") == "erased":
        raise not_found("member", member_id)
    before = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await a.store.signups_of_member(member_id, before, limit + 1)
    page = docs[:limit]
    activities = await a.store.activities_by_id(
        [s["activity_id"] for s in page], {"title": 1, "shifts": 1}
    )

    def item(doc: Doc) -> MemberRecordItem:
        activity = activities.get(doc["activity_id"], {})
        shift = (activity.get("shifts") or {}).get(doc["shift_id"], {})
        out = SignupOut.from_doc(doc).model_dump()
        return MemberRecordItem(**out, title=activity.get("title"), role=shift.get("role"))

    totals = await a.store.member_totals(member_id)
    return MemberRecord(
        member_id=member_id,
        items=_readable(a, request, page, item),
        next_cursor=encode_cursor(page[-1]["member_key"]) if len(docs) > limit else None,
        attended=int(totals.get("n") or 0),
        hours=round(float(totals.get("hours") or 0), 2),
    )


def _readable(
    a: Activities, request: Request, docs: list[Doc], convert: Callable[[Doc], T]
) -> list[T]:
    """A page's documents as answers; one that cannot be read is left out and counted."""
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            a.skipped.skip("signups", doc.get("_id"), exc, f"GET {request.url.path}")
    return items
