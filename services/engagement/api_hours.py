"""Engagement HTTP routes for volunteer hours: recorded pending, decided by coordinator or staff."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, StrictFloat

from services.engagement.context import (
    Engagement,
    Strict,
    active_member,
    decider,
    engagement_of,
    rendered,
)
from services.engagement.store import Doc, from_ms, page_cursor
from shared.events import HoursApproved, new_event, utcnow
from shared.http import ApiError, new_id, not_found, require
from shared.limits import Day, Ident, Title, text
from shared.query import ORDER_KEY_RE, decode_cursor, order_key
from shared.store import epoch_ms

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
        created_at=from_ms(entry["created_ms"]),  # type: ignore[arg-type]
        decided_by=entry.get("decided_by"),
        decided_at=from_ms(entry.get("decided_ms")),
        reason=entry.get("reason", ""),
    )


@router.post("/hours", status_code=201, response_model=HoursOut, dependencies=[require(WRITE)])
async def record_hours(body: HoursIn, request: Request) -> HoursOut:
    """Record volunteer hours as `pending`, for a coordinator or staff member to decide."""
    e = engagement_of(request)
    await active_member(e, body.member_id)
    now = e.clock()
    if body.date > (now + timedelta(days=1)).date():
        raise ApiError(
            422, "future_date", f"hours cannot be recorded for {body.date}, a future date"
        )
    entry_id = new_id(request)
    entry = {
        "_id": entry_id,
        "member_id": body.member_id,
        "hours": body.hours,
        "activity": body.activity,
        "date": body.date.isoformat(),
        "note": body.note,
        "status": "pending",
        "created_ms": epoch_ms(now),
        "order_key": order_key(epoch_ms(now), entry_id),
    }
    if not await e.store.insert("hours", entry, []):
        # The same request again (its first answer was lost): the entry it made is the answer.
        entry = await e.store.hours_entry(entry_id) or entry
    return _hours_out(entry)


async def _decide(entry_id: str, body: DecisionIn, request: Request, status: str) -> HoursOut:
    e = engagement_of(request)
    entry = await e.store.hours_entry(entry_id)
    if entry is None:
        raise not_found("hours entry", entry_id)
    await decider(e, body.by, entry["member_id"])
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        # The kept response will show the member's entry: erasure must find it by the member
        # (noted first, so that it exists whenever the record may).
        record_id = f"{request.url.path}:{key}"
        await e.store.note_decision_request(record_id, entry["member_id"], utcnow())
    return await _decision(e, entry, body, status)


async def _decision(e: Engagement, entry: Doc, body: DecisionIn, status: str) -> HoursOut:
    entry_id = entry["_id"]
    if entry["status"] == "pending":
        now = e.clock()
        events = []
        if status == "approved":
            events.append(
                new_event(
                    HoursApproved(
                        entry_id=entry_id,
                        member_id=entry["member_id"],
                        hours=entry["hours"],
                        activity=entry["activity"],
                        date=date.fromisoformat(entry["date"]),
                        approved_by=body.by,
                    ),
                    time=now,
                )
            )
        decision: dict[str, Any] = {
            "status": status,
            "decided_by": body.by,
            "decided_ms": epoch_ms(now),
            "reason": body.reason,
        }
        if await e.store.decide_hours(entry_id, decision, events):
            if events:
                e.relay.kick(e.store.hours, entry_id)
            return _hours_out({**entry, **decision})
        entry = await e.store.hours_entry(entry_id) or entry
    if entry["status"] == status:
        return _hours_out(entry)  # the same decision again changes nothing
    raise ApiError(409, "already_decided", f"hours entry {entry_id} is already {entry['status']}")


@router.post("/hours/{entry_id}/approve", response_model=HoursOut, dependencies=[require(DECIDE)])
async def approve_hours(entry_id: str, body: DecisionIn, request: Request) -> HoursOut:
    """Approve pending hours (coordinator or staff only): they score and emit hours-approved."""
    return await _decide(entry_id, body, request, "approved")


@router.post("/hours/{entry_id}/reject", response_model=HoursOut, dependencies=[require(DECIDE)])
async def reject_hours(entry_id: str, body: DecisionIn, request: Request) -> HoursOut:
    """Reject pending hours (coordinator or staff only)."""
    return await _decide(entry_id, body, request, "rejected")


@router.get("/members/{member_id}/hours", response_model=HoursList, dependencies=[require(READ)])
async def member_hours(
    member_id: str,
    request: Request,
    status: str | None = Query(None, pattern="^(pending|approved|rejected)$"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> HoursList:
    e = engagement_of(request)
    member = await e.store.member(member_id)
    if member is None or member.get("status") == "erased":
        raise not_found("member", member_id)
    before = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await e.store.hours_of(member_id, status, limit, before)
    totals = await e.store.hours_totals(member_id)
    return HoursList(
        items=rendered(docs, _hours_out, "hours entry"),
        next_cursor=page_cursor(docs[-1]) if len(docs) == limit else None,
        approved_hours=round(totals.get("approved", 0.0), 2),
        pending_hours=round(totals.get("pending", 0.0), 2),
    )
