"""The campaigns HTTP resources: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.campaigns.domain import CountReferrals, Status, WinnerRule, from_ms
from shared.events import Announcement, Audience, CampaignKind


class AnnouncementIn(Announcement):
    ru: str = Field(min_length=1, max_length=2000)
    en: str = Field(min_length=1, max_length=2000)


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    kind: CampaignKind
    starts_at: datetime
    ends_at: datetime
    audience: Audience = Field(default_factory=Audience)
    scoring: dict[str, float] = Field(
        description="points per event type (hours-approved: per approved hour)",
        examples=[{"referral-made": 10, "post-created": 2}],
    )
    milestones: list[int] = Field(default_factory=list, description="points, ascending")
    winners: int = Field(1, description="how many winners")
    winner_rule: WinnerRule = "top"
    count_referrals: CountReferrals = "joined"
    announcement: AnnouncementIn

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # A time without an offset is UTC, as every time in the API.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class WinnerOut(BaseModel):
    member_id: str
    rank: int
    points: float


class EntrantOut(BaseModel):
    member_id: str
    points: float


class DrawOut(BaseModel):
    procedure: str
    seed: str
    entrants: list[EntrantOut]


class ResultOut(BaseModel):
    winner_rule: WinnerRule
    participants: int
    points_total: float
    winners: list[WinnerOut]
    draw: DrawOut | None = None


def _time(doc: dict[str, Any], key: str) -> datetime | None:
    value = doc.get(key)
    return from_ms(value) if value is not None else None


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    kind: CampaignKind
    status: Status
    starts_at: datetime
    ends_at: datetime
    audience: Audience
    scoring: dict[str, float]
    milestones: list[int]
    winners: int
    winner_rule: WinnerRule
    count_referrals: CountReferrals
    announcement: Announcement
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cancelled_at: datetime | None = None
    window: dict[str, datetime] = Field(description="the times between which events score")
    result: ResultOut | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CampaignOut:
        return cls(
            campaign_id=doc["_id"],
            **{
                k: doc[k]
                for k in (
                    "name",
                    "kind",
                    "status",
                    "audience",
                    "scoring",
                    "milestones",
                    "winners",
                    "winner_rule",
                    "count_referrals",
                    "announcement",
                )
            },
            starts_at=from_ms(doc["starts_ms"]),
            ends_at=from_ms(doc["ends_ms"]),
            created_at=from_ms(doc["created_ms"]),
            started_at=_time(doc, "started_ms"),
            ended_at=_time(doc, "ended_ms"),
            cancelled_at=_time(doc, "cancelled_ms"),
            window={"start": from_ms(doc["window_start_ms"]), "end": from_ms(doc["window_end_ms"])},
            result=doc.get("result"),
        )


class CampaignList(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None = None


class StandingOut(BaseModel):
    rank: int
    member_id: str
    display_name: str | None = None
    points: float
    reached_at: datetime = Field(
        description="when the member reached these points (ties: earlier wins)"
    )
    milestones: list[int]


class Leaderboard(BaseModel):
    campaign_id: str
    status: Status
    items: list[StandingOut]
    next_cursor: str | None = None


class Report(BaseModel):
    campaign_id: str
    status: Status
    window: dict[str, datetime]
    participants: int = Field(description="members in the audience with points")
    points_total: float
    milestones_reached: int
    new_members_by_referral: int = Field(
        description="joined by a referral from the audience, in the window"
    )
    new_members_joined: int = Field(description="audience members who joined in the window")
    posts: int
    comments: int
    answers_accepted: int
    hours: float = Field(description="approved volunteer hours of audience members in the window")
    referred_active_after_30d: int = Field(
        description="of the new members by referral, how many were active 30 days or more after "
        "joining"
    )
    referred_not_yet_30d: int = Field(description="of them, how many joined less than 30 days ago")
    computed_at: datetime
