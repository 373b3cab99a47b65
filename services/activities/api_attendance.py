"""Attendance routes: a coordinator's check-in, check-out and no-show; the member's self
check-in with the shift's code; the coordinator's check-in link. The check-in page a link
opens calls the same use cases (`Attendance.record`, after `CheckinLinks.resolve`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.activities.api import CHECKIN, SIGNUP, ActivityId
from services.activities.context import ActivitiesDep, refusals
from services.activities.schemas import AttendanceIn, CheckinIn, LinkIn, LinkOut, SignupOut
from services.activities.usecases import Mark
from shared.http import acting_member, principal_of, require

router = APIRouter(prefix="/v1", tags=["activities"])


@router.post(
    "/activities/{activity_id}/attendance",
    response_model=SignupOut,
    dependencies=[require(CHECKIN)],
)
async def attendance(
    activity_id: ActivityId, body: AttendanceIn, request: Request, a: ActivitiesDep
) -> SignupOut:
    """Check a member in or out, or record a no-show. A member without a sign-up becomes a
    walk-in. Check-out emits `attended` with the hours (bounded by the shift)."""
    mark = Mark(
        shift_id=body.shift_id,
        member_id=body.member_id,
        action=body.action,
        at=body.at,
        recorded_by=body.recorded_by or f"key:{principal_of(request).key_id}",
        activity_id=activity_id,
    )
    with refusals():
        signup = await a.attendance.record(mark)
    return SignupOut.from_doc(signup)


@router.post("/checkin", response_model=SignupOut, dependencies=[require(SIGNUP)])
async def self_check_in(body: CheckinIn, request: Request, a: ActivitiesDep) -> SignupOut:
    """The member checks in with the shift's code, from 30 minutes before its start to its
    end. A wrong code is 422 `invalid_code`, whichever code it was."""
    member_id = acting_member(request, body.member_id)
    with refusals():
        signup = await a.attendance.self_check_in(body.code, member_id)
    return SignupOut.from_doc(signup)


@router.post(
    "/activities/{activity_id}/checkin-link",
    status_code=201,
    response_model=LinkOut,
    dependencies=[require(CHECKIN)],
)
async def create_link(
    activity_id: ActivityId,
    request: Request,
    a: ActivitiesDep,
    response: Response,
    body: LinkIn | None = None,
) -> LinkOut:
    """A link to the check-in page, valid until the activity ends (a new one revokes the
    previous). The link is the credential: it is shown once and kept only as a hash. What the
    page records is `recorded_by` the coordinator named (a key bound to a member: that member;
    default: the API key)."""
    principal = principal_of(request)
    named = body.recorded_by if body is not None else None
    if principal.member_id is not None:
        recorded_by = acting_member(request, named, "recorded_by")
    else:
        recorded_by = named or f"key:{principal.key_id}"
    with refusals():
        link = await a.links.create(activity_id, recorded_by)
    # The token is shown once: an Idempotency-Key replay says "done" without repeating it.
    response.headers["Cache-Control"] = "no-store"
    return LinkOut(url=link.url, expires_at=link.expires_at)


@router.delete(
    "/activities/{activity_id}/checkin-link", status_code=204, dependencies=[require(CHECKIN)]
)
async def revoke_link(activity_id: ActivityId, a: ActivitiesDep) -> Response:
    """Revoke the activity's check-in link (its page stops working at once)."""
    with refusals():
        await a.links.revoke(activity_id)
    return Response(status_code=204)
