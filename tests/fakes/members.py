"""The members service on memory, for fast use-case tests (no servers).

`members_on_memory()` builds the real store and unit of work on an in-memory database
(tests/fakes/memory.py) with a relay that only records what it was asked to publish, so a use
case runs end to end in microseconds. The relay never publishes: what a use case wrote stays
pending in its document, as when NATS is away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.members.store import MemberStore
from services.members.usecases import JoinCommand, MemberUseCases
from shared.events import CloudEvent
from shared.uow import UnitOfWork, pending_events
from tests.fakes.memory import MemoryCollection, MemoryDatabase

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@dataclass
class RecordingRelay:
    """The relay's side of a unit of work: remembers the events it was handed (a document
    handed without its events has them read back, as the relay does), publishes nothing."""

    published: list[CloudEvent] = field(default_factory=list)
    #: (collection, document id) of every kick, in order.
    kicked: list[tuple[str, Any]] = field(default_factory=list)

    def watch(self, collection: Any) -> None:
        pass

    def kick(
        self, collection: MemoryCollection, doc_id: Any, events: list[CloudEvent] | None = None
    ) -> None:
        self.kicked.append((collection.name, doc_id))
        if events is None:
            doc = next((d for d in collection.documents() if d["_id"] == doc_id), {})
            events = [CloudEvent.model_validate(e) for e in pending_events(doc)]
        self.published.extend(events)

    def kick_many(
        self, collection: MemoryCollection, docs: dict[Any, list[CloudEvent] | None]
    ) -> None:
        for doc_id, events in docs.items():
            self.kick(collection, doc_id, events)

    async def publish_now(
        self, collection: MemoryCollection, docs: dict[Any, list[CloudEvent] | None]
    ) -> int:
        before = len(self.published)
        self.kick_many(collection, docs)
        return len(self.published) - before

    def types(self) -> list[str]:
        return [e.type for e in self.published]

    def of_type(self, event_type: str) -> list[CloudEvent]:
        return [e for e in self.published if e.type == event_type]


@dataclass
class MembersOnMemory:
    db: MemoryDatabase
    store: MemberStore
    relay: RecordingRelay
    #: Members whose erasure the use case handed on (the eraser's kick).
    erased: list[str] = field(default_factory=list)
    clock: Callable[[], datetime] = lambda: NOW

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.relay)  # type: ignore[arg-type]

    def use_cases(self, clock: Callable[[], datetime] | None = None) -> MemberUseCases:
        """The use cases on this store, reading the time from `clock` (default: NOW)."""
        return MemberUseCases(
            self.store,
            self.unit_of_work,
            clock or self.clock,
            phone_region="RU",
            erased=self.erased.append,
        )

    async def member(self, member_id: str) -> dict[str, Any]:
        """A member's whole stored document (pending events included)."""
        doc = await self.store.get_whole(member_id)
        assert doc is not None, member_id
        return doc


def join_command(**overrides: Any) -> JoinCommand:
    """What a valid join body becomes (the route's parse step), with `overrides`."""
    profile = {
        "display_name": "Anna",
        "region": "moscow",
        "roles": ["volunteer"],
        "interests": ["Ecology"],
        "skills": [],
        "locale": "ru",
        "timezone": "Europe/Moscow",
    }
    profile.update({k: overrides.pop(k) for k in list(overrides) if k in profile})
    fields: dict[str, Any] = {
        "email": "anna@example.org",
        "phone": None,
        "telegram": None,
        "terms": True,
        "marketing": False,
        **overrides,
    }
    return JoinCommand(profile=profile, **fields)


async def members_on_memory() -> MembersOnMemory:
    db = MemoryDatabase("members")
    store = MemberStore(db)  # type: ignore[arg-type]
    await store.ensure_indexes()
    return MembersOnMemory(db, store, RecordingRelay())
