"""The campaigns HTTP resources: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator

from services.campaigns.domain import CountReferrals, Status, WinnerRule
from shared.clock import from_ms
from shared.events import Announcement, Audience, CampaignEnding, CampaignKind, Level, Role
from shared.limits import Moment, Points, Region, Request, Title, text

#: Bounds of a campaign definition. Each exists because something breaks beyond it: the
#: campaign-started event carries the name, the audience and the announcement, and an event
#: NATS refuses would keep the campaign from ever starting; a scoring rule or milestone is a
#: number the standings add up and store (BSON has no integer over 2^63, JSON no infinity).
SCORING_MAX = 20
MILESTONES_MAX = 20
WINNERS_MAX = 1000
REGIONS_MAX = 100
ROLES_MAX = 10
ANNOUNCEMENT_MAX = 2000
#: Milestones are whole points, in the range a scoring rule may give. Counts and milestones
#: are JSON integers (strict): `true` is not one winner, `"5"` not a milestone.
Milestone = Annotated[int, Field(strict=True, le=1_000_000)]
#: A scoring key: an event type (which ones is checked with the other rules, to list them).
EventType = Annotated[str, StringConstraints(max_length=50)]
#: An announcement in one language: a few paragraphs.
AnnouncementText = text(ANNOUNCEMENT_MAX, min_length=1)


class AnnouncementIn(Request):
    ru: AnnouncementText
    en: AnnouncementText


class AudienceIn(Request):
    """Who the campaign is for; empty lists mean everyone."""

    regions: list[Region] = Field(default_factory=list, max_length=REGIONS_MAX)
    roles: list[Role] = Field(default_factory=list, max_length=ROLES_MAX)
    min_level: Level | None = None


class CampaignIn(Request):
    """A new campaign. Every field is bounded here, and the rules between fields
    (`domain.validate_definition`) are checked before anything is stored."""

    name: Title
    kind: CampaignKind
    starts_at: Moment
    ends_at: Moment
    audience: AudienceIn = Field(default_factory=AudienceIn)
    scoring: dict[EventType, Points] = Field(
        description="points per event type (hours-approved: per approved hour)",
        examples=[{"referral-made": 10, "post-created": 2}],
        max_length=SCORING_MAX,
    )
    milestones: list[Milestone] = Field(
        default_factory=list, description="points, ascending", max_length=MILESTONES_MAX
    )
    winners: int = Field(1, description="how many winners", strict=True, le=WINNERS_MAX)
    winner_rule: WinnerRule = "top"
    count_referrals: CountReferrals = Field(
        "active",
        description="a referral scores once the referred member is active (`joined`, scoring "
        "at the sign-up, is refused for new campaigns)",
    )
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
    procedure: str = Field(description="sarafan-draw-v2 (v1: campaigns started before it)")
    seed: str
    entrants: list[EntrantOut]
    secret: str | None = Field(None, description="v2: the secret committed to at the start")
    commitment: str | None = Field(None, description="v2: SHA-256 (hex) of the secret")
    standings_sha256: str | None = Field(
        None, description="v2: SHA-256 (hex) of the canonical standings"
    )


class ResultOut(BaseModel):
    winner_rule: WinnerRule
    participants: int
    points_total: float
    winners: list[WinnerOut]
    draw: DrawOut | None = None


def ending_out(stored: dict[str, Any] | None) -> CampaignEnding | None:
    """The stored record of a campaign's end (`frozen_ms`) as the resource and campaign-ended
    show it."""
    if stored is None:
        return None
    return CampaignEnding(
        by_hand=stored["by_hand"],
        key_id=stored.get("key_id"),
        early=stored.get("early", False),
        frozen_at=from_ms(stored["frozen_ms"]),
    )


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
    draw_commitment: str | None = Field(
        None,
        description="winner_rule draw: SHA-256 (hex) of the secret drawn at the start; the "
        "secret itself is shown in result.draw once the campaign ended",
    )
    ending: CampaignEnding | None = Field(None, description="who ended it, and whether early")
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
            draw_commitment=doc.get("draw_commitment"),
            ending=ending_out(doc.get("ending")),
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
    attendances: int = Field(
        0, description="shifts of activities attended by audience members in the window"
    )
    referred_active_after_30d: int = Field(
        description="of the new members by referral, how many were active 30 days or more after "
        "joining"
    )
    referred_not_yet_30d: int = Field(description="of them, how many joined less than 30 days ago")
    computed_at: datetime
