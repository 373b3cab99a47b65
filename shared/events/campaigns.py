"""The events the campaigns service publishes (stream CAMPAIGNS)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.events.base import CampaignKind, EventData, EventPart, Happened, Level, Planned, Role


class Audience(EventPart):
    regions: list[str] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    min_level: Level | None = None


class Announcement(EventPart):
    ru: str
    en: str


#: A SHA-256 digest or a 32-byte secret, as 64 lowercase hex digits.
HEX_256 = r"^[0-9a-f]{64}$"
#: The example draw (c_01): campaign-started commits to this secret, campaign-ended reveals
#: it; docs/campaigns.md re-runs it by hand and a unit test checks it verifies.
EXAMPLE_SECRET = "878cbd0ca93ecc09a2ec45e1c43fa22de42cc23fae51face5599bebd8f7b90ba"
EXAMPLE_COMMITMENT = "239892bd864acd46bb86b556b93d251543486e35e4f78bebf386c4e74faafbc1"


class CampaignStarted(EventData):
    """A campaign became active (at its start time or by hand); a draw commits to its secret."""

    event_type = "campaign-started"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "name": "Bring a friend",
        "kind": "referral-drive",
        "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
        "starts_at": "2026-11-01T00:00:00Z",
        "ends_at": "2026-11-30T00:00:00Z",
        "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
        "draw_commitment": EXAMPLE_COMMITMENT,
    }

    campaign_id: str
    name: str
    kind: CampaignKind
    audience: Audience
    starts_at: Planned
    ends_at: Planned
    announcement: Announcement
    draw_commitment: str | None = Field(
        None,
        pattern=HEX_256,
        description="winner_rule draw: SHA-256 (hex) of the secret drawn at the start, which "
        "campaign-ended reveals (procedure sarafan-draw-v2)",
    )


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


class CampaignEnding(EventPart):
    """How a campaign ended: by the scheduler after its ends_at, or by hand (who, when)."""

    by_hand: bool = Field(description="ended by POST .../end, not by the scheduler")
    key_id: str | None = Field(None, description="the API key that ended it by hand")
    early: bool = Field(False, description="ended by hand before its ends_at")
    # A plan's time: ends_at itself, or the moment of an early end (never read as a clock).
    frozen_at: Planned = Field(
        description="the standings are those of activities before this time: ends_at, or "
        "the moment of an early end"
    )


class DrawOutcome(EventPart):
    """A draw as campaign-ended publishes it: enough to re-run and check it (with the
    commitment of campaign-started) without asking the service anything."""

    procedure: str = Field(description="sarafan-draw-v2 (v1: campaigns started before it)")
    seed: str
    entrants: int = Field(ge=0, description="how many entrants (members with points)")
    draws: int | None = Field(None, ge=0, description="how many draws: the campaign's winners")
    secret: str | None = Field(None, pattern=HEX_256, description="v2: the secret, revealed")
    commitment: str | None = Field(None, pattern=HEX_256, description="v2: SHA-256(secret)")
    standings_sha256: str | None = Field(
        None, pattern=HEX_256, description="v2: SHA-256 of the canonical standings"
    )
    standings: list[tuple[str, str]] | None = Field(
        None,
        description="v2: the canonical standings [member id, points with two decimals], by "
        "member id; left out when over 256 KiB (then read result.draw of the campaign)",
    )


class CampaignEnded(EventData):
    """A campaign ended; winners by its winner rule (a draw reveals its secret and seed)."""

    event_type = "campaign-ended"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "participants": 3,
        "winners": [{"member_id": "m_01", "rank": 1, "points": 120}],
        "winner_rule": "draw",
        "ended_at": "2026-11-30T00:00:05Z",
        "ending": {
            "by_hand": False,
            "key_id": None,
            "early": False,
            "frozen_at": "2026-11-30T00:00:00Z",
        },
        "draw": {
            "procedure": "sarafan-draw-v2",
            "seed": "ffb59647411d0aa47c98a4c206e29e038b86464ddfa885ca5a7ff1f635ac4bda",
            "entrants": 3,
            "draws": 1,
            "secret": EXAMPLE_SECRET,
            "commitment": EXAMPLE_COMMITMENT,
            "standings_sha256": "3f95e828bd922af59d9b6e37a65ff154edfed286dc2efb1f4659f0492cbc17f0",
            "standings": [["m_01", "120.00"], ["m_02", "30.00"], ["m_03", "12.50"]],
        },
    }

    campaign_id: str
    participants: int = Field(ge=0)
    winners: list[Winner] = Field(default_factory=list)
    winner_rule: Literal["top", "draw"] | None = None
    ended_at: Happened | None = None
    ending: CampaignEnding | None = None
    draw: DrawOutcome | None = None
