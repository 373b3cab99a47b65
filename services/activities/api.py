"""Activities HTTP routes: create, list, read, change, cancel an activity; its report and the
community's stats. Parse, call the use case (`usecases.Planning`, `usecases.figures`), map
refusals to 4xx."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from services.activities import domain
from services.activities.context import Activities, ActivitiesDep, refusals
from services.activities.schemas import (
    ActivityIn,
    ActivityList,
    ActivityOut,
    ActivityPatchIn,
    CancelIn,
    ReportOut,
    StatsOut,
    shift_out,
)
from services.activities.usecases import activity_report, community
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.http import error_responses, new_id, not_found, principal_of, require
from shared.limits import Region
from shared.query import ORDER_KEY_RE, decode_cursor, encode_cursor, order_key

router = APIRouter(prefix="/v1", tags=["activities"])
#: The scopes of the activities' routes (shared/keys.py says what each allows).
READ, MANAGE, SIGNUP, CHECKIN = (
    "activities:read",
    "activities:manage",
    "activities:signup",
    "activities:checkin",
)
#: An id as this service hands them out, with room to spare; longer is a 422.
ActivityId = Annotated[str, Path(min_length=1, max_length=100)]


def sees_codes(request: Request) -> bool:
    """Check-in codes are shown to the keys that run check-in (manage or checkin) only."""
    principal = principal_of(request)
    return principal.allows(MANAGE) or principal.allows(CHECKIN)


async def activity_out(a: Activities, doc: Doc, with_code: bool) -> ActivityOut:
    ledgers = {d["_id"]: d for d in await a.store.ledgers_of(doc["_id"])}
    shifts = [
        shift_out(doc["shifts"][sid], sid, ledgers.get(sid), with_code)
        for sid in domain.shift_ids_in_order(doc)
    ]
    return ActivityOut.from_doc(doc, shifts)


async def _activity(a: Activities, activity_id: str) -> Doc:
    doc = await a.store.activity(activity_id)
    if doc is None:
        raise not_found("activity", activity_id)
    return doc


@router.post(
    "/activities", status_code=201, response_model=ActivityOut, dependencies=[require(MANAGE)]
)
async def create_activity(body: ActivityIn, request: Request, a: ActivitiesDep) -> ActivityOut:
    """Create an activity with its shifts, as a draft or published (activity-published)."""
    # Keyed by the Idempotency-Key when there is one: a retry finds what the first stored.
    activity_id = "a_" + new_id(request).replace("-", "")
    fields = body.model_dump(mode="json", exclude={"shifts", "status"})
    shifts = [domain.ShiftTimes(s.role, s.starts_at, s.ends_at, s.capacity) for s in body.shifts]
    with refusals():
        doc = await a.planning.create(activity_id, fields, shifts, body.status)
    return await activity_out(a, doc, with_code=True)


@router.get("/activities", response_model=ActivityList, dependencies=[require(READ)])
async def list_activities(
    request: Request,
    a: ActivitiesDep,
    region: Annotated[Region | None, Query()] = None,
    status: Annotated[Literal["draft", "published", "cancelled"] | None, Query()] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="first start, from")] = None,
    to: Annotated[datetime | None, Query(description="first start, before")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> ActivityList:
    """Activities by their first start (soonest first), filtered by region, status and a
    window of start times; cursor pagination."""
    after = order_key(epoch_ms(from_), "") if from_ is not None else None
    if cursor:
        key = decode_cursor(cursor, ORDER_KEY_RE)
        after = max(after, key) if after is not None else key
    until = order_key(epoch_ms(to), "") if to is not None else None
    docs = await a.store.list_activities(region, status, after, until, limit + 1)
    page = docs[:limit]
    items = []
    for doc in page:
        try:
            items.append(await activity_out(a, doc, sees_codes(request)))
        except Exception as exc:
            a.skipped.skip("activities", doc.get("_id"), exc, "GET /v1/activities")
    next_cursor = encode_cursor(page[-1]["list_key"]) if len(docs) > limit else None
    return ActivityList(items=items, next_cursor=next_cursor)


@router.get("/activities/stats", response_model=StatsOut, dependencies=[require(READ)])
async def stats(a: ActivitiesDep) -> StatsOut:
    """The community's volunteering in the last 30 days (also the sarafan_community_* gauges)."""
    now = a.now()
    figures = await community(a.store, now)
    a.gauges.show(figures)
    return StatsOut(**figures, computed_at=now)


@router.get("/activities/{activity_id}", response_model=ActivityOut, dependencies=[require(READ)])
async def get_activity(activity_id: ActivityId, request: Request, a: ActivitiesDep) -> ActivityOut:
    """One activity with each shift's counts (its check-in code for manage or checkin keys)."""
    return await activity_out(a, await _activity(a, activity_id), sees_codes(request))


@router.patch(
    "/activities/{activity_id}",
    response_model=ActivityOut,
    dependencies=[require(MANAGE)],
    responses=error_responses(
        {
            409: {
                "already_published": "a published activity cannot go back to draft",
                "activity_cancelled": "activity a_… is cancelled",
                "capacity_below_confirmed": "shift s_… has 3 confirmed member(s): its capacity "
                "cannot go below 3",
                "shift_ended": "shift s_… has ended; it cannot change",
                "activity_ended": "every shift of this draft has ended",
                "concurrent_change": "activity a_… kept changing; retry",
            }
        }
    ),
)
async def change_activity(
    activity_id: ActivityId, body: ActivityPatchIn, a: ActivitiesDep
) -> ActivityOut:
    """Change title, description, place, a shift's role, times or capacity, or publish a
    draft (activity-changed with the new values; activity-published when published now)."""
    fields = body.model_dump(include={"title", "description", "location"}, exclude_none=True)
    shifts = [
        domain.ShiftChange(s.shift_id, s.role, s.starts_at, s.ends_at, s.capacity)
        for s in body.shifts
    ]
    with refusals():
        doc = await a.planning.change(activity_id, fields, shifts, body.status)
    return await activity_out(a, doc, with_code=True)


@router.post(
    "/activities/{activity_id}/cancel",
    response_model=ActivityOut,
    dependencies=[require(MANAGE)],
)
async def cancel_activity(activity_id: ActivityId, body: CancelIn, a: ActivitiesDep) -> ActivityOut:
    """Cancel (activity-cancelled); every sign-up is cancelled (sign-up-changed
    `activity-cancelled`)."""
    with refusals():
        doc = await a.planning.cancel(activity_id, body.reason)
    return await activity_out(a, doc, with_code=True)


@router.get(
    "/activities/{activity_id}/report", response_model=ReportOut, dependencies=[require(READ)]
)
async def report(activity_id: ActivityId, a: ActivitiesDep) -> ReportOut:
    """Confirmed, waitlisted, attended, no-shows, walk-ins, fill and no-show rates, hours,
    first-time attendees: per shift and in total, from the counters kept in its shifts."""
    doc = await _activity(a, activity_id)
    ledgers = await a.store.ledgers_of(activity_id)
    return ReportOut(**activity_report(doc, ledgers))
