"""What a unit of work stages (shared/uow.py): a `Write` of one document with its events for a
bulk, the `Step` each staged write returns (its outcome once a commit has made it), and the
`Outcome` a repository reads from several steps. The unit of work's module re-exports them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from pymongo import InsertOne, ReplaceOne, UpdateOne

from shared.events import CloudEvent
from shared.outbox_layout import update_with_events as _update_with_events
from shared.outbox_layout import with_events as _with_events

T = TypeVar("T")


class Write:
    """One document's write with its events, for `UnitOfWork.bulk` (one bulk_write)."""

    __slots__ = ("doc_id", "events", "op")

    def __init__(
        self,
        op: InsertOne[Any] | UpdateOne | ReplaceOne[Any],
        doc_id: Any,
        events: list[CloudEvent],
    ):
        self.op = op
        self.doc_id = doc_id
        self.events = events

    @classmethod
    def insert(cls, document: Mapping[str, Any], events: Iterable[CloudEvent] = ()) -> Write:
        evs = list(events)
        return cls(InsertOne(_with_events(document, evs)), document["_id"], evs)

    @classmethod
    def update(
        cls,
        doc_id: Any,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Iterable[CloudEvent] = (),
        *,
        upsert: bool = False,
    ) -> Write:
        evs = list(events)
        return cls(
            UpdateOne(dict(filter), _update_with_events(update, evs), upsert=upsert), doc_id, evs
        )


class Step(Generic[T]):
    """One write staged in a unit of work; its outcome is known once a commit has run it."""

    __slots__ = ("_done", "_result", "_run", "refused")

    def __init__(self, run: Callable[[], Awaitable[T]] | None = None) -> None:
        self._run = run
        self._done = False
        self._result: T | None = None
        #: Positions refused as duplicates (a bulk staged with `skip_duplicates`).
        self.refused: list[int] = []

    async def _execute(self) -> None:
        if self._run is None:
            raise RuntimeError("an outcome is read from its steps; it is not staged itself")
        self._result = await self._run()
        self._done = True

    @property
    def done(self) -> bool:
        return self._done

    @property
    def result(self) -> T:
        """What the write did (the driver's result); only after the commit that ran it."""
        if not self._done:
            raise RuntimeError("a staged write has no outcome before the commit that runs it")
        return self._result  # type: ignore[return-value]


class Outcome(Step[T]):
    """What several staged writes come to, known once the commit that makes them has run:
    `read` of their steps' results (`await uow.commit(outcome)` returns it). A repository whose
    answer is not one driver result gives one (engagement's standings: which members lost the
    version race). Not staged itself: its steps are."""

    __slots__ = ("_read", "_steps")

    def __init__(self, read: Callable[[], T], *steps: Step[Any]) -> None:
        super().__init__()
        self._read = read
        self._steps = steps

    @property
    def done(self) -> bool:
        return all(step.done for step in self._steps)

    @property
    def result(self) -> T:
        if not self.done:
            raise RuntimeError("a staged write has no outcome before the commit that runs it")
        return self._read()
