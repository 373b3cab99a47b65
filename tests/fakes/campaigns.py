"""The campaigns service's use cases wired to memory: no MongoDB, no NATS, microseconds.

`CampaignsWorld()` holds the service's real store over in-memory collections
(`tests.fakes.memory`), the service's unit of work (`CampaignsUnitOfWork`, owning its
repositories) with a relay that records what it is asked to publish instead of publishing, a
clock the test moves, and the two use-case objects the app builds (`Lifecycle`, `Scoring`) on
top of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from services.campaigns.repositories import CampaignsUnitOfWork
from services.campaigns.schemas import CampaignIn
from services.campaigns.store import CampaignsStore
from services.campaigns.usecases import Lifecycle, Scoring
from shared.events import CloudEvent, EventData, new_event
from shared.skipped import SkippedDocuments
from tests.fakes.memory import MemoryDatabase
from tests.fakes.relay import RecordingRelay

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that stays where the test puts it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class CampaignsWorld:
    def __init__(self, end_grace: timedelta = timedelta(seconds=5)) -> None:
        self.db = MemoryDatabase("sarafan_campaigns")
        self.store = CampaignsStore(self.db)  # type: ignore[arg-type]
        self.relay = RecordingRelay()
        self.clock = Clock()
        self.skipped = SkippedDocuments("campaigns", CollectorRegistry())
        self.lifecycle = Lifecycle(
            self.store, self.unit_of_work, end_grace, self.skipped, self.clock
        )
        self.scoring = Scoring(self.store, self.unit_of_work, self.skipped, self.clock)

    def unit_of_work(self) -> CampaignsUnitOfWork:
        return CampaignsUnitOfWork(self.relay, self.store)

    def campaign(self, **over: Any) -> CampaignIn:
        """A valid definition: running from a minute before the clock for a week."""
        body: dict[str, Any] = {
            "name": "Bring a friend",
            "kind": "referral-drive",
            "starts_at": self.clock() - timedelta(minutes=1),
            "ends_at": self.clock() + timedelta(days=7),
            "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
            "scoring": {"referral-made": 10},
            "milestones": [20],
            "winners": 2,
            "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
        }
        body.update(over)
        return CampaignIn.model_validate(body)

    async def running(self, **over: Any) -> str:
        """A campaign created and started by hand; its id."""
        doc = await self.lifecycle.create(self.campaign(**over), self.clock())
        await self.lifecycle.start(doc["_id"], self.clock(), by_hand=True)
        return doc["_id"]

    def standing(self, campaign_id: str, member_id: str) -> dict[str, Any] | None:
        found = [
            d for d in self.db["standings"].documents() if d["_id"] == f"{campaign_id}:{member_id}"
        ]
        return found[0] if found else None

    def points(self, campaign_id: str) -> dict[str, float]:
        return {
            d["member_id"]: d["points"]
            for d in self.db["standings"].documents()
            if d["campaign_id"] == campaign_id and d["points"] > 0
        }


def batch(*items: EventData, at: datetime = T0) -> list[tuple[CloudEvent, EventData]]:
    """Events as a consumer gets them: each in its envelope, published at `at`."""
    return [(new_event(data, time=at), data) for data in items]
