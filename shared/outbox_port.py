"""The seam between a unit of work and the outbox relay: what a commit hands over, and the port.

A unit of work (shared/uow.py) writes each changed document with its events; on `commit` it
hands the relay everything that commit produced in one `Committed`, through one call:

    await relay.committed(Committed(written, batches, wait=False))

The relay decides per part how it publishes it (shared/outbox.py): one document at once in
the background, many documents of a collection in one flush, a batch document in the batch
form (shared/outbox_batch.py), awaited when the caller asked for it (`wait`). The one other
call, `watch`, tells the relay which collections hold an outbox *as they are written*, before
the commit: a process that dies between a write and its commit leaves the sweep index behind,
so the next process finds those events (docs/patterns.md, section 1).

`Publisher` is the port: the real `Relay` satisfies it, the fast tests' recording relay
implements it (tests/fakes/relay.py), and the unit of work is typed against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from shared.events import CloudEvent

Collection = AsyncCollection[dict[str, Any]]


@dataclass(frozen=True)
class Written:
    """The documents of one collection a commit wrote with events, each with its events in
    the order written; None where they must be read back from the document (a bulk write that
    failed in part: which of its writes landed is in the documents, not in the writer)."""

    collection: Collection
    documents: dict[Any, list[CloudEvent] | None]


@dataclass(frozen=True)
class WrittenBatch:
    """One batch document a commit wrote (the outbox's batch form): its id, the collection of
    the new documents it announces, and the events of those its insert created."""

    collection: Collection
    batch_id: str
    documents: dict[Any, list[CloudEvent]]


@dataclass(frozen=True)
class Committed:
    """Everything one commit produced, for the relay. `wait`: the caller awaits the publishing
    (an import paces its chunks by it) instead of letting it run on in the background."""

    written: list[Written] = field(default_factory=list)
    batches: list[WrittenBatch] = field(default_factory=list)
    wait: bool = False

    def __bool__(self) -> bool:
        return bool(self.written or self.batches)


class Publisher(Protocol):
    """What a unit of work needs of the outbox relay."""

    def watch(self, collection: Collection, *, batched: bool = False) -> None:
        """Sweep `collection` too: called on its first write with events, before the commit.
        `batched`: its new documents ride in the batch form; sweep the batch documents."""
        ...

    async def committed(self, commit: Committed) -> None:
        """Publish what one commit wrote (awaited when `commit.wait`, else in the background:
        without `wait` this returns without waiting on the database or NATS)."""
        ...
