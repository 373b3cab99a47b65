"""Engagement HTTP routes for volunteer hours: recorded pending, decided by coordinator or staff.

The rules (who may decide, once, no future dates) are in contributions.py; the routes call the
use cases (`Hours`, usecases/hours.py) through the service's context and render the entry.
Entries that attendance at an activity made (attendance.py) are listed with them, approved,
with where they came from."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, StrictFloat

from services.engagement import usecases
from services.engagement.attendance import MANUAL
from services.engagement.context import Engagement, EngagementDep, Strict, refusals, rendered
from shared.clock import from_ms
from shared.documents import Doc
from shared.http import (
    acting_member,
    error_responses,
    new_id,
    not_found,
    request_record,
    require,
)
from shared.limits import Day, Ident, Title, text
from shared.query import ORDER_KEY_RE, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["engagement"])
#: The scopes of these routes: deciding also needs a coordinator or staff member as `by`.
READ, WRITE, DECIDE = "engagement:read", "engagement:write", "hours:decide"


#: Hours of one day: a JSON number (not `true`, not "3"), finite, more than 0 and at most 24.
Hours = Annotated[StrictFloat, Field(gt=0, le=24, allow_inf_nan=False)]
Note = text(2000)


class HoursIn(Strict):
    member_id: Ident
    hours: Hours
    activity: Title
    date: Day
    note: Note = ""


class DecisionIn(Strict):
    by: Ident = Field(description="a member with the coordinator or staff role")
    reason: Note = ""


class AttendanceOut(BaseModel):
    """Where hours from attendance came from (the activities service's ids)."""

    activity_id: str
    shift_id: str
    signup_id: str | None = None
    walk_in: bool = False
    checked_in_at: datetime
    checked_out_at: datetime | None = None


class HoursOut(BaseModel):
    entry_id: str
    member_id: str
    hours: float
    activity: str
    date: date
    note: str
    status: str
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    #: `manual` (recorded, then decided by a coordinator) or `attendance` (approved at once).
    source: str = MANUAL
    attendance: AttendanceOut | None = None


class HoursList(BaseModel):
    items: list[HoursOut]
    next_cursor: str | None = None
    approved_hours: float
    pending_hours: float


def _hours_out(entry: Doc) -> HoursOut:
    return HoursOut(
        entry_id=entry["_id"],
        member_id=entry["member_id"],
        hours=entry["hours"],
        activity=entry["activity"],
        date=date.fromisoformat(entry["date"]),
        note=entry.get("note", ""),
        status=entry["status"],
        created_at=from_ms(entry["created_ms"]),
        decided_by=entry.get("decided_by"),
        decided_at=from_ms(entry["decided_ms"]) if entry.get("decided_ms") is not None else None,
        reason=entry.get("reason", ""),
        source=entry.get("source", MANUAL),
        attendance=_attendance_out(entry.get("attendance")),
    )


def _attendance_out(attended: Doc | None) -> AttendanceOut | None:
    if attended is None:
        return None
    out = attended.get("checked_out_ms")
    return AttendanceOut(
        activity_id=attended["activity_id"],
        shift_id=attended["shift_id"],
        signup_id=attended.get("signup_id"),
        walk_in=attended.get("walk_in", False),
        checked_in_at=from_ms(attended["checked_in_ms"]),
        checked_out_at=from_ms(out) if out is not None else None,
    )


@router.post("/hours", status_code=201, response_model=HoursOut, dependencies=[require(WRITE)])
async def record_hours(body: HoursIn, request: Request, e: EngagementDep) -> HoursOut:
    """Record volunteer hours as `pending`, for a coordinator or staff member to decide."""
    member = acting_member(request, body.member_id)
    cmd = usecases.NewHours(entry_id=new_id(request), **{**body.model_dump(), "member_id": member})
    with refusals():
        entry = await e.hours.record_hours(cmd)
    return _hours_out(entry)


async def _decide(
    entry_id: str, body: DecisionIn, request: Request, e: Engagement, status: str
) -> HoursOut:
    cmd = usecases.DecideHours(
        entry_id=entry_id,
        # A key bound to a member decides as that member only (who must be coordinator/staff).
        by=acting_member(request, body.by, "by"),
        status=status,
        reason=body.reason,
        # Where the kernel keeps this request's answer (see shared/http/idempotency.py).
        request_record=request_record(request),
    )
    with refusals():
        entry = await e.hours.decide_hours(cmd)
    return _hours_out(entry)


#: What deciding answers for hours already approved or rejected.
DECIDED = error_responses({409: {"already_decided": "hours entry h_01 is already approved"}})


@router.post(
    "/hours/{entry_id}/approve",
    response_model=HoursOut,
    dependencies=[require(DECIDE)],
    responses=DECIDED,
)
async def approve_hours(
    entry_id: str, body: DecisionIn, request: Request, e: EngagementDep
) -> HoursOut:
    """Approve pending hours (coordinator or staff only): they score and emit hours-approved."""
    return await _decide(entry_id, body, request, e, "approved")


@router.post(
    "/hours/{entry_id}/reject",
    response_model=HoursOut,
    dependencies=[require(DECIDE)],
    responses=DECIDED,
)
async def reject_hours(
    entry_id: str, body: DecisionIn, request: Request, e: EngagementDep
) -> HoursOut:
    """Reject pending hours (coordinator or staff only)."""
    return await _decide(entry_id, body, request, e, "rejected")


@router.get("/members/{member_id}/hours", response_model=HoursList, dependencies=[require(READ)])
async def member_hours(
    member_id: str,
    request: Request,
    e: EngagementDep,
    status: str | None = Query(None, pattern="^(pending|approved|rejected)$"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> HoursList:
    member_id = acting_member(request, member_id)
    member = await e.store.member(member_id)
    if member is None or member.get("status") == "erased":
        raise not_found("member", member_id)
    before = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await e.store.hours_of(member_id, status, limit, before)
    totals = await e.store.hours_totals(member_id)
    return HoursList(
        items=rendered(docs, _hours_out, "hours entry"),
        next_cursor=encode_cursor(docs[-1]["order_key"]) if len(docs) == limit else None,
        approved_hours=round(totals.get("approved", 0.0), 2),
        pending_hours=round(totals.get("pending", 0.0), 2),
    )
