"""The events the campaigns service publishes (stream CAMPAIGNS)."""

from __future__ import annotations

from pydantic import Field

from shared.events.base import CampaignKind, EventData, EventPart, Level, Planned, Role


class Audience(EventPart):
    regions: list[str] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    min_level: Level | None = None


class Announcement(EventPart):
    ru: str
    en: str


class CampaignStarted(EventData):
    """A campaign became active (at its start time or by hand)."""

    event_type = "campaign-started"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "name": "Bring a friend",
        "kind": "referral-drive",
        "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
        "starts_at": "2026-12-01T00:00:00Z",
        "ends_at": "2026-12-31T00:00:00Z",
        "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
    }

    campaign_id: str
    name: str
    kind: CampaignKind
    audience: Audience
    starts_at: Planned
    ends_at: Planned
    announcement: Announcement


class MilestoneReached(EventData):
    """A member reached a campaign milestone (once per member and milestone)."""

    event_type = "milestone-reached"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {"campaign_id": "c_01", "member_id": "m_01", "milestone": 50, "points": 52}

    campaign_id: str
    member_id: str
    milestone: int
    points: float


class Winner(EventPart):
    member_id: str
    rank: int = Field(ge=1)
    points: float


class CampaignEnded(EventData):
    """A campaign ended; winners by its winner rule (a draw publishes its seed)."""

    event_type = "campaign-ended"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "participants": 42,
        "winners": [{"member_id": "m_01", "rank": 1, "points": 120}],
    }

    campaign_id: str
    participants: int = Field(ge=0)
    winners: list[Winner] = Field(default_factory=list)
