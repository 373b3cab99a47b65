"""The unit of work: a use case's writes, each carrying the events it raises, made at commit.

A use case never writes the outbox itself. It stages each changed document and the events of
that change in its unit of work; `commit` makes the staged writes, in the order staged, each in
one single-document operation (the state and its events land together or not at all:
docs/patterns.md, section 1), and hands everything the commit wrote to the relay in one call
(`Publisher.committed`, shared/outbox_port.py), which publishes the events at once and removes
them from the document when JetStream has acknowledged them. A crash between the write and the
publish loses nothing: the relay's sweeper finds what is still pending.

    async with self.unit_of_work() as uow:      # a service's subclass, owning its repositories
        uow.members.insert(member, [joined])     # the repository stages uow.insert(...)
    # committed on leaving the block: the insert is made, `joined` published

The write calls below (`insert`, `update`, `bulk`, ...) are what repositories (`Repository`)
stage with; a use case speaks to the repositories its unit of work owns.

Nothing is written before `commit`; leaving the block with an exception drops what was staged
(nothing written, nothing published). A use case whose next move depends on a write's outcome
(a guarded write that may lose a race, a duplicate key meaning "done before") commits there and
reads it: `result = await uow.commit(uow.update(...))`; each such write is its own commit, so a
crash leaves the same states as the write order always did (docs/patterns.md, section 1).

The layout of the outbox fields, and the helpers that read them: shared/outbox_layout.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError
from pymongo.results import BulkWriteResult, DeleteResult, UpdateResult

from shared.events import CloudEvent
from shared.outbox_batch import chunks, insert_batch
from shared.outbox_layout import update_with_events as _update_with_events
from shared.outbox_layout import with_events as _with_events
from shared.outbox_layout import without_outbox
from shared.outbox_port import Collection, Committed, Publisher, Written, WrittenBatch
from shared.staged import Outcome, Step, Write
from shared.store import only_duplicates

T = TypeVar("T")

__all__ = ["Outcome", "Repository", "Step", "UnitOfWork", "Write"]


class UnitOfWork:
    """The writes of one use case and the events they raise (see the module's text)."""

    def __init__(self, relay: Publisher) -> None:
        self._relay = relay
        #: Writes staged since the last commit, in the order they were staged.
        self._staged: list[Step[Any]] = []
        #: Per written document, its events; None when they must be read back (a bulk write
        #: that failed in part: which of its writes landed is in the documents, not here).
        self._written: dict[tuple[str, Any], tuple[Collection, list[CloudEvent] | None]] = {}
        #: Batches written (the batch form): id, collection, the new documents and their events.
        self._batches: list[WrittenBatch] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            self.discard()

    def discard(self) -> None:
        """Drop the writes staged since the last commit: they are never made."""
        self._staged.clear()

    def _stage(self, run: Callable[[], Awaitable[T]]) -> Step[T]:
        step = Step(run)
        self._staged.append(step)
        return step

    def _note(self, coll: Collection, doc_id: Any, events: list[CloudEvent] | None) -> None:
        if events is not None and not events:
            return
        self._relay.watch(coll)
        key = (coll.name, doc_id)
        _, before = self._written.get(key, (coll, []))
        merged = None if events is None or before is None else [*before, *events]
        self._written[key] = (coll, merged)

    def insert(
        self, coll: Collection, document: Mapping[str, Any], events: Iterable[CloudEvent] = ()
    ) -> Step[None]:
        """Stage the insert of a new document carrying `events`."""
        evs, doc = list(events), dict(document)

        async def run() -> None:
            await coll.insert_one(_with_events(doc, evs))
            self._note(coll, doc["_id"], evs)

        return self._stage(run)

    def update(
        self,
        coll: Collection,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Iterable[CloudEvent] = (),
        *,
        upsert: bool = False,
        doc_id: Any = None,
    ) -> Step[UpdateResult]:
        """Stage an `update_one` carrying `events`; they are published only when it changes or
        inserts a document. `doc_id` defaults to the filter's `_id`."""
        evs, flt, upd = list(events), dict(filter), _update_with_events(update, list(events))

        async def run() -> UpdateResult:
            result = await coll.update_one(flt, upd, upsert=upsert)
            if result.modified_count or result.upserted_id is not None:
                target = result.upserted_id if result.upserted_id is not None else doc_id
                self._note(coll, target if target is not None else _id_of(flt), evs)
            return result

        return self._stage(run)

    def find_one_and_update(
        self,
        coll: Collection,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Iterable[CloudEvent] = (),
        *,
        projection: Mapping[str, Any] | None = None,
        upsert: bool = False,
        after: bool = True,
    ) -> Step[dict[str, Any] | None]:
        """Stage a `find_one_and_update` carrying `events`; its outcome is the document (after
        the change by default, without the outbox), or None when nothing matched."""
        evs, flt, upd = list(events), dict(filter), _update_with_events(update, list(events))
        shown = _hiding_outbox(projection)
        returned = ReturnDocument.AFTER if after else ReturnDocument.BEFORE

        async def run() -> dict[str, Any] | None:
            doc = await coll.find_one_and_update(
                flt, upd, projection=shown, upsert=upsert, return_document=returned
            )
            if doc is not None or upsert:
                self._note(coll, doc["_id"] if doc is not None else _id_of(flt), evs)
            return doc

        return self._stage(run)

    def delete(self, coll: Collection, filter: Mapping[str, Any]) -> Step[DeleteResult]:
        """Stage a `delete_many` (documents that carry no pending event: an erased member's
        listing entries, a forgotten request's record)."""
        flt = dict(filter)
        return self._stage(lambda: coll.delete_many(flt))

    def update_many(
        self, coll: Collection, filter: Mapping[str, Any], update: Mapping[str, Any]
    ) -> Step[UpdateResult]:
        """Stage an `update_many` raising no event (copies of a changed value, an erasure's
        anonymising of what a person left in many documents)."""
        flt, upd = dict(filter), dict(update)
        return self._stage(lambda: coll.update_many(flt, upd))

    def replace(
        self, coll: Collection, filter: Mapping[str, Any], document: Mapping[str, Any]
    ) -> Step[UpdateResult]:
        """Stage a `replace_one` raising no event (a document rewritten whole, e.g. an erased
        standing). A document with pending events is changed with `update`, never replaced."""
        flt, doc = dict(filter), dict(document)
        return self._stage(lambda: coll.replace_one(flt, doc))

    def bulk(
        self,
        coll: Collection,
        writes: list[Write],
        *,
        ordered: bool = False,
        skip_duplicates: bool = False,
    ) -> Step[BulkWriteResult | None]:
        """Stage one `bulk_write` of many documents' writes, each with its own events. At
        commit a write that fails (a duplicate key) raises BulkWriteError as usual, unless
        `skip_duplicates` and every failure is a duplicate key: then the step's `refused`
        lists their positions and its result is None. Either way the events of the writes
        that did land are published (the relay reads them from their documents)."""
        writes = list(writes)
        step: Step[BulkWriteResult | None]

        async def run() -> BulkWriteResult | None:
            if not writes:
                return None
            try:
                result = await coll.bulk_write([w.op for w in writes], ordered=ordered)
            except BulkWriteError as exc:
                self._note_unsure(coll, writes)
                if not (skip_duplicates and only_duplicates(exc)):
                    raise
                step.refused = sorted(int(e["index"]) for e in exc.details.get("writeErrors", []))
                return None
            except BaseException:
                self._note_unsure(coll, writes)
                raise
            self._note_bulk(coll, writes, result)
            return result

        step = self._stage(run)
        return step

    def _note_unsure(self, coll: Collection, writes: list[Write]) -> None:
        for w in writes:
            if w.events:
                self._note(coll, w.doc_id, None)

    def _note_bulk(self, coll: Collection, writes: list[Write], result: BulkWriteResult) -> None:
        updates = [i for i, w in enumerate(writes) if isinstance(w.op, UpdateOne)]
        upserted = set(result.upserted_ids or {})
        # An update whose filter matched nothing (a guard that lost a race) wrote nothing:
        # which ones did is in the documents, so those events are read back, never assumed.
        unsure = result.matched_count + len(upserted) < len(updates)
        for i, w in enumerate(writes):
            if not w.events:
                continue
            guessed = unsure and isinstance(w.op, UpdateOne) and i not in upserted
            self._note(coll, w.doc_id, None if guessed else w.events)

    def insert_many(
        self,
        coll: Collection,
        documents: list[Mapping[str, Any]],
        events: Mapping[Any, list[CloudEvent]],
    ) -> Step[list[Any]]:
        """Stage the insert of new documents with deterministic ids, each with its events (by
        document id), in the outbox's batch form: the events of up to a thousand documents ride
        in one batch document, not in each (shared/outbox_batch.py), so publishing them costs
        one write per batch instead of one per document. A duplicate key means written before:
        that document is skipped with its events (the earlier write's stand). Its outcome: the
        ids inserted by this commit."""
        documents = list(documents)

        async def run() -> list[Any]:
            new: list[Any] = []
            if any(events.get(d["_id"]) for d in documents):
                self._relay.watch(coll, batched=True)
            for chunk in chunks(documents):
                batch_id, inserted = await insert_batch(coll, chunk, events)
                if batch_id is not None:
                    announced = {i: list(events[i]) for i in inserted if events.get(i)}
                    self._batches.append(WrittenBatch(coll, batch_id, announced))
                new += inserted
            return new

        return self._stage(run)

    @overload
    async def commit(self, *, wait: bool = False) -> None: ...
    @overload
    async def commit(self, step: Step[T], *, wait: bool = False) -> T: ...
    async def commit(self, step: Step[Any] | None = None, *, wait: bool = False) -> Any:
        """Make the staged writes, in the order staged, and hand the relay, in one call,
        everything they wrote: the documents by collection, each with its events, and the batch
        documents. With `step` (one of the writes staged), return its outcome: a use case
        whose next move depends on a write commits there. A write that raises stops the commit:
        what the writes before it (and it, in part) wrote is handed over, the writes staged
        after it are dropped, and the error is raised. The relay decides how each part goes
        out (shared/outbox.py). With `wait`, the publishing is awaited here (an import paces its
        chunks by it) instead of running on."""
        staged, self._staged = self._staged, []
        try:
            for each in staged:
                await each._execute()
        finally:
            await self._hand_over(wait)
        return step.result if step is not None else None

    async def _hand_over(self, wait: bool) -> None:
        written, self._written = self._written, {}
        batches, self._batches = self._batches, []
        by_coll: dict[str, Written] = {}
        for (name, doc_id), (coll, events) in written.items():
            by_coll.setdefault(name, Written(coll, {})).documents[doc_id] = events
        commit = Committed(list(by_coll.values()), batches, wait)
        if commit:
            await self._relay.committed(commit)


class Repository:
    """The writes to one kind of a service's documents, owned by one unit of work.

    A service's unit of work (a subclass of `UnitOfWork`) makes its repositories when it is
    opened and names them after their documents (`uow.members`, `uow.signups`); a use case
    stages through them (`uow.members.insert(member, events)`), never by handing a unit of
    work to a store. A repository only stages: what it wrote is made by the owner's commit.
    Plain reads stay on the service's store, which the repository is given for its
    collections.
    """

    __slots__ = ("uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow


def _hiding_outbox(projection: Mapping[str, Any] | None) -> dict[str, Any]:
    """A projection that never returns the outbox: an inclusion leaves it out by itself (and
    MongoDB refuses one mixed with exclusions); otherwise the outbox's fields are excluded."""
    given = dict(projection or {})
    if any(v for k, v in given.items() if k != "_id"):
        return given
    return {**without_outbox(), **given}


def _id_of(filter: Mapping[str, Any]) -> Any:
    value = filter.get("_id")
    if isinstance(value, Mapping) and "$eq" in value:
        return value["$eq"]
    if value is None:
        raise ValueError("a write with events needs the document's _id (in the filter or doc_id)")
    return value
