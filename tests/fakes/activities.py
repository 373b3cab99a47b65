"""The activities service's use cases wired to memory: no MongoDB, no NATS, microseconds.

`ActivitiesWorld()` holds the service's real store and use cases (`services.activities.app
.compose` would build the same) over in-memory collections (`tests.fakes.memory`), the
service's unit of work (its repositories over that store) with a relay that records what it
would publish, a clock the test moves, and a purge that records the subjects it was asked to
purge.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.activities import domain
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases import (
    Attendance,
    CheckinLinks,
    Ledger,
    MembersFollower,
    Planning,
    ShiftTally,
    SignUps,
)
from shared.events import CloudEvent
from tests.fakes.campaigns import T0, Clock
from tests.fakes.memory import MemoryDatabase
from tests.fakes.relay import RecordingRelay

__all__ = ["T0", "ActivitiesWorld"]


class ActivitiesWorld:
    def __init__(self, grace: timedelta = timedelta(minutes=60)) -> None:
        self.db = MemoryDatabase("sarafan_activities")
        self.store = ActivitiesStore(self.db)  # type: ignore[arg-type]
        self.relay = RecordingRelay()
        self.clock = Clock()
        self.purged: list[tuple[str, str]] = []
        self.ledger = Ledger(self.store, self.unit_of_work)
        self.tally = ShiftTally(self.store, self.unit_of_work)
        self.signups = SignUps(self.store, self.ledger, self.unit_of_work, self.clock)
        self.planning = Planning(self.store, self.ledger, self.unit_of_work, self.clock)
        self.attendance = Attendance(
            self.store, self.ledger, self.tally, self.unit_of_work, grace, self.clock
        )
        self.links = CheckinLinks(
            self.store, self.unit_of_work, "https://sarafan.example.org", self.clock
        )
        self.members = MembersFollower(self.store, self.ledger, self.unit_of_work, self._purge)

    def unit_of_work(self) -> ActivitiesUnitOfWork:
        return ActivitiesUnitOfWork(self.relay, self.store)

    async def _purge(self, stream: str, subject: str) -> None:
        self.purged.append((stream, subject))

    async def member(self, member_id: str, status: str = "active") -> str:
        await self.db["members"].insert_one({"_id": member_id, "status": status})
        return member_id

    async def activity(
        self, capacities: tuple[int, ...] = (2,), status: str = "published", **fields: Any
    ) -> dict[str, Any]:
        """An activity whose shifts start a day after the clock, back to back, 3 hours each."""
        start = self.clock() + timedelta(days=1)
        shifts = [
            domain.ShiftTimes("planter", start + timedelta(hours=3 * i),
                              start + timedelta(hours=3 * (i + 1)), c)
            for i, c in enumerate(capacities)
        ]  # fmt: skip
        body = {"title": "Planting", "region": "moscow", "timezone": "Europe/Moscow",
                "organiser_id": "m_org", **fields}  # fmt: skip
        aid = f"a_{len(self.db['activities'].documents()) + 1}"
        return await self.planning.create(aid, body, shifts, status, self.clock())

    def shift_ids(self, activity: dict[str, Any]) -> list[str]:
        return domain.shift_ids_in_order(activity)

    async def sign_up(self, activity: dict[str, Any], member_id: str, n: int = 0) -> Any:
        sid = self.shift_ids(activity)[n]
        su = f"su_{member_id}_{sid[-4:]}"
        return await self.signups.sign_up(activity["_id"], sid, member_id, su, self.clock())

    def ledger_doc(self, shift_id: str) -> dict[str, Any]:
        [doc] = [d for d in self.db["shifts"].documents() if d["_id"] == shift_id]
        return doc

    def signup_doc(self, signup_id: str) -> dict[str, Any]:
        [doc] = [d for d in self.db["signups"].documents() if d["_id"] == signup_id]
        return doc

    def published(self, type_: str | None = None) -> list[CloudEvent]:
        return self.relay.published(type_)
