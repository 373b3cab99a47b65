"""The fast tests' outbox relay: records what each commit hands it, publishes nothing.

It implements the unit of work's port (`Publisher`, shared/outbox_port.py), so a use case runs
end to end with the kernel's own unit of work and no server. What a use case wrote stays in
its documents' outbox (nothing removes it), and the test reads what would have gone out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shared.events import CloudEvent
from shared.outbox_port import Collection, Committed


class Kick(NamedTuple):
    """One document handed to the relay: `events` None means "read them back from the
    document" (the writer did not know which of its writes landed)."""

    collection: str
    doc_id: Any
    events: list[CloudEvent] | None


class Published(list[CloudEvent]):
    """Every event handed over, in order (a document handed without its events has them read
    back, as the relay does). Called: what the stream would keep, once each (JetStream drops a
    second copy by its id), oldest first, of one type when named."""

    def __call__(self, type_: str | None = None) -> list[CloudEvent]:
        seen: dict[str, CloudEvent] = {}
        for event in self:
            seen.setdefault(event.id, event)
        events = sorted(seen.values(), key=lambda e: e.time)
        return [e for e in events if type_ is None or e.type == type_]


class RecordingRelay:
    """The relay's side of a unit of work, recording instead of publishing."""

    def __init__(self) -> None:
        self.published = Published()
        #: Every document handed over, in order.
        self.kicks: list[Kick] = []
        #: Publishing rounds: one per collection a commit wrote to, one per batch document.
        self.flushes = 0
        self.watched: set[str] = set()

    def watch(self, collection: Collection, *, batched: bool = False) -> None:
        self.watched.add("outbox_batches" if batched else collection.name)

    async def committed(self, commit: Committed) -> None:
        parts = [(b.collection, dict[Any, Any](b.documents)) for b in commit.batches]
        parts += [(w.collection, w.documents) for w in commit.written]
        for collection, documents in parts:
            self.flushes += 1
            for doc_id, events in documents.items():
                self.kicks.append(Kick(collection.name, doc_id, events))
                if events is None:
                    doc = await collection.find_one({"_id": doc_id}, {"outbox": 1})
                    raw = ((doc or {}).get("outbox") or {}).values()
                    events = [CloudEvent.model_validate(e) for e in raw]
                self.published.extend(events)

    def forget(self) -> None:
        """Start recording afresh (after a test's set-up)."""
        self.published.clear()
        self.kicks.clear()
        self.flushes = 0

    def types(self) -> list[str]:
        """The types of the events handed over, in order."""
        return [e.type for e in self.published]

    def of_type(self, event_type: str) -> list[CloudEvent]:
        return [e for e in self.published if e.type == event_type]
