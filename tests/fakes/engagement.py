"""Engagement's stand-ins for fast tests: the reference rules, and the service on memory.

- The reference rules (`score`, `replay`, `score_horizon`) say what the scores are by their
  definition, one fact at a time: the service computes them another way (day buckets folded
  into a base, one document per member), and the tests check that it gives the same figures.
- `engagement_on_memory()` builds the real store, scoring, use cases and unit of work (with the
  repositories it owns) on an in-memory database (tests/fakes/memory.py) with a relay that only
  records what it was asked to publish, so a use case runs end to end in microseconds, with no
  server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.engagement import domain
from services.engagement.domain import LEVELS, Fact, Rules
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.scoring import Scoring
from services.engagement.store import EngagementStore
from services.engagement.usecases import Activity, Hours, MemberEvents, Posts
from shared.clock import utcnow
from tests.fakes.memory import MemoryDatabase
from tests.fakes.relay import RecordingRelay

# -- the reference rules -------------------------------------------------------------------------


def score(facts: Iterable[Fact], now: datetime, rules: Rules) -> float:
    """Sum of each fact's points decayed to `now`; fsum makes it independent of order."""
    return math.fsum(
        f.points(rules) * domain.decay_factor(now - f.at, rules.half_life) for f in facts
    )


def score_horizon(now: datetime, rules: Rules) -> datetime:
    """Facts older than this weigh less than 2^-40 of their points."""
    return domain.day_of(now - 40 * rules.half_life)


def replay(facts: Sequence[Fact], rules: Rules, start: str = LEVELS[0]) -> tuple[float, str]:
    """Score and level after applying facts one at a time, each scored at its own time: what
    the service does as events arrive, stated the simple way."""
    level = start
    seen: list[Fact] = []
    for f in facts:
        seen.append(f)
        level = domain.next_level(level, score(seen, f.at, rules), rules)
    end = max((f.at for f in facts), default=None)
    return (score(facts, end, rules) if end else 0.0), level


# -- the service on memory -----------------------------------------------------------------------


@dataclass
class OnMemory:
    db: MemoryDatabase
    store: EngagementStore
    relay: RecordingRelay
    scoring: Scoring
    erased: list[tuple[str, str]]
    #: The use cases, built as the composition root builds them, on this fake's clock.
    posts: Posts = field(init=False)
    hours: Hours = field(init=False)
    members: MemberEvents = field(init=False)
    activity: Activity = field(init=False)
    #: The time the use cases read (`at` moves it); real time while None.
    now: datetime | None = None

    def unit_of_work(self) -> EngagementUnitOfWork:
        return EngagementUnitOfWork(self.relay, self.store)

    def clock(self) -> datetime:
        return self.now or utcnow()

    def at(self, moment: datetime) -> OnMemory:
        """The use cases' clock held at `moment`: `await e.at(NOW).posts.create_post(cmd)`."""
        self.now = moment
        return self

    async def erase(self, stream: str, subject: str) -> int:
        self.erased.append((stream, subject))
        return 0

    async def member(self, member_id: str, **fields: Any) -> dict[str, Any]:
        """A member as the projection keeps one (active unless `status` says otherwise)."""
        doc = {"_id": member_id, "status": "active", "display_name": member_id, **fields}
        await self.store.members.insert_one(doc)
        return doc


def engagement_on_memory(rules: Rules | None = None) -> OnMemory:
    db = MemoryDatabase("engagement")
    store = EngagementStore(db)  # type: ignore[arg-type]
    relay = RecordingRelay()
    on_memory = OnMemory(db, store, relay, None, [])  # type: ignore[arg-type]
    rules = rules or Rules()
    on_memory.scoring = scoring = Scoring(store, rules, on_memory.unit_of_work)
    on_memory.posts = Posts(store, on_memory.unit_of_work, on_memory.clock, rules.reactions)
    on_memory.hours = Hours(store, on_memory.unit_of_work, on_memory.clock)
    on_memory.members = MemberEvents(
        store, on_memory.unit_of_work, scoring, on_memory.erase, on_memory.clock
    )
    on_memory.activity = Activity(store, scoring, on_memory.clock)
    return on_memory
