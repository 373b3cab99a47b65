"""Engagement HTTP routes the organisation reads: engagement, segments, leaderboard, stats."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.engagement.context import EngagementDep, rendered
from services.engagement.insights import SEGMENTS
from shared.http import acting_member, not_found, require
from shared.query import decode_offset

router = APIRouter(prefix="/v1", tags=["engagement"])
#: The scope of these routes (shared/keys.py says what it allows).
READ = "engagement:read"


class Counts(BaseModel):
    posts: int
    questions: int
    comments: int
    reactions_received: int
    reactions_given: int
    answers_accepted: int
    referrals: int


class EngagementOut(BaseModel):
    member_id: str
    score: float = Field(description="decayed to now (half-life configurable, 30 days by default)")
    level: str
    next_level: str | None
    next_level_score: float | None
    counts: Counts
    points_total: float = Field(description="every point ever earned, without decay")
    hours_approved: float
    last_active_at: datetime | None
    streak_days: int = Field(description="consecutive UTC days with activity up to today")
    joined_at: datetime | None


class SegmentMember(BaseModel):
    member_id: str
    display_name: str | None
    region: str | None
    level: str
    score: float
    joined_at: datetime | None
    last_active_at: datetime | None
    days_inactive: int | None


class SegmentOut(BaseModel):
    segment: str
    items: list[SegmentMember]
    next_cursor: str | None = None


class LeaderboardRow(BaseModel):
    rank: int
    member_id: str
    display_name: str | None
    region: str | None
    points: float
    level: str


class LeaderboardOut(BaseModel):
    period: str
    region: str | None
    items: list[LeaderboardRow]
    next_cursor: str | None = None


class StatsOut(BaseModel):
    as_of: datetime
    members_total: int
    active_7d: int
    active_30d: int
    new_7d: int
    loyal_pool: int
    posts_7d: int
    questions_7d: int
    answered_by_community_ratio: float | None
    median_seconds_to_first_answer: float | None
    referral_join_share: float | None
    returned_after_drift_30d: int
    drifting: int
    hours_approved_30d: float


@router.get(
    "/members/{member_id}/engagement", response_model=EngagementOut, dependencies=[require(READ)]
)
async def member_engagement(member_id: str, request: Request, e: EngagementDep) -> EngagementOut:
    member = await e.store.member(acting_member(request, member_id))
    if member is None or member.get("status") == "erased":
        raise not_found("member", member_id)
    return EngagementOut.model_validate(await e.insights.engagement(member, e.clock()))


@router.get("/segments/{name}", response_model=SegmentOut, dependencies=[require(READ)])
async def segment(
    name: str,
    e: EngagementDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> SegmentOut:
    """`new-promising` (joined in the last 30 days, most active first), `drifting` (active or
    above, no activity for 14 days) or `loyal` (the loyal pool: loyal and ambassador)."""
    if name not in SEGMENTS:
        raise not_found("segment", name)
    start = decode_offset(cursor)
    page, more = await e.insights.segment(name, e.clock(), start, limit)
    return SegmentOut(
        segment=name,
        items=rendered(page, SegmentMember.model_validate, "segment row"),
        next_cursor=str(start + limit) if more else None,
    )


@router.get("/leaderboard", response_model=LeaderboardOut, dependencies=[require(READ)])
async def leaderboard(
    e: EngagementDep,
    period: Literal["7d", "30d", "all"] = "30d",
    region: str | None = Query(None, max_length=100),
    limit: int = Query(10, ge=1, le=100),
) -> LeaderboardOut:
    """Points earned in the period (undecayed), optionally within one region."""
    rows = await e.insights.leaderboard(period, region, limit, e.clock())
    valid = rendered(rows, LeaderboardRow.model_validate, "leaderboard row")
    # Ranked after leaving out a row that could not be shown: no gap in the ranks.
    items = [row.model_copy(update={"rank": i + 1}) for i, row in enumerate(valid)]
    return LeaderboardOut(period=period, region=region, items=items)


@router.get("/stats", response_model=StatsOut, dependencies=[require(READ)])
async def stats(e: EngagementDep) -> StatsOut:
    """Community health now; the same figures are the `sarafan_community_*` gauges."""
    now = e.clock()
    figures = await e.insights.figures(now)
    e.gauges.show(figures)
    return StatsOut.model_validate({"as_of": now, **figures})
