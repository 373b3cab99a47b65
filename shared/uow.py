"""The unit of work: a use case's writes, each carrying the events it raises, published after.

A use case never writes the outbox itself. It hands each changed document and the events of
that change to its unit of work, which writes them in one single-document operation (the
state and its events land together or not at all: docs/patterns.md, section 1) and, on
`commit`, hands everything the commit wrote to the relay in one call (`Publisher.committed`,
shared/outbox_port.py), which publishes the events at once and removes them from the
document when JetStream has acknowledged them. A crash between the write and the publish
loses nothing: the relay's sweeper finds what is still pending.

    async with runtime.unit_of_work() as uow:
        await uow.insert(store.members, member, [joined])
    # committed: the relay publishes `joined` now

Writes go to the database as they are made (a later step may depend on an earlier one's
result); `commit` publishes. Leaving the block with an exception publishes what was written
so far too: those writes are done, their events must follow them. Why writes are not held
until `commit`, and what holding them would take: docs/patterns.md, section 1.

Reads that must not return the outbox use `without_outbox` as (part of) their projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.results import BulkWriteResult, UpdateResult

from shared.events import CloudEvent
from shared.outbox_batch import BATCH_FIELD, chunks, insert_batch
from shared.outbox_port import Collection, Committed, Publisher, Written, WrittenBatch

#: The kernel's fields in a document with an outbox; hidden from reads that return documents.
OUTBOX_FIELDS = ("outbox", "outbox_pending", "outbox_dead", BATCH_FIELD)


def staged(events: Iterable[CloudEvent]) -> dict[str, Any]:
    """Fields to `$set` (or insert) so the events leave with the state change, atomically.

    Pending events are a subdocument keyed by event id plus a counter, not an array of
    subdocuments: nx-27017 mangles arrays of subdocuments on update, and keyed entries let
    the relay remove exactly the acknowledged one.
    """
    return {f"outbox.{e.id}": e.model_dump(mode="json") for e in events}


def with_outbox(document: dict[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    """A new document carrying its first events (for inserts)."""
    return {
        **document,
        "outbox": {e.id: e.model_dump(mode="json") for e in events},
        "outbox_pending": len(events),
    }


def update_with_outbox(update: dict[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    """Add the events to a MongoDB update document (`$set` plus the pending counter)."""
    merged = {k: dict(v) for k, v in update.items()}
    merged.setdefault("$set", {}).update(staged(events))
    merged.setdefault("$inc", {})["outbox_pending"] = merged.get("$inc", {}).get(
        "outbox_pending", 0
    ) + len(events)
    return merged


def without_outbox(*also: str) -> dict[str, int]:
    """A projection leaving out the outbox (and the other fields named)."""
    return dict.fromkeys((*OUTBOX_FIELDS, *also), 0)


def _with_events(document: Mapping[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    return with_outbox(dict(document), events) if events else dict(document)


def _update_with_events(update: Mapping[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    return update_with_outbox(dict(update), events) if events else dict(update)


class Write:
    """One document's write with its events, for `UnitOfWork.bulk` (one bulk_write)."""

    __slots__ = ("doc_id", "events", "op")

    def __init__(self, op: InsertOne[Any] | UpdateOne, doc_id: Any, events: list[CloudEvent]):
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


class UnitOfWork:
    """The writes of one use case and the events they raise (see the module's text)."""

    def __init__(self, relay: Publisher) -> None:
        self._relay = relay
        #: Per written document, its events; None when they must be read back (a bulk write
        #: that failed in part: which of its writes landed is in the documents, not here).
        self._written: dict[tuple[str, Any], tuple[Collection, list[CloudEvent] | None]] = {}
        #: Batches written (the batch form): id, collection, the new documents and their events.
        self._batches: list[WrittenBatch] = []

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.commit()

    def _note(self, coll: Collection, doc_id: Any, events: list[CloudEvent] | None) -> None:
        if events is not None and not events:
            return
        self._relay.watch(coll)
        key = (coll.name, doc_id)
        _, before = self._written.get(key, (coll, []))
        merged = None if events is None or before is None else [*before, *events]
        self._written[key] = (coll, merged)

    async def insert(
        self, coll: Collection, document: Mapping[str, Any], events: Iterable[CloudEvent] = ()
    ) -> None:
        evs = list(events)
        await coll.insert_one(_with_events(document, evs))
        self._note(coll, document["_id"], evs)

    async def update(
        self,
        coll: Collection,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Iterable[CloudEvent] = (),
        *,
        upsert: bool = False,
        doc_id: Any = None,
    ) -> UpdateResult:
        """`update_one` carrying `events`; they are published only when a document was
        changed or inserted. `doc_id` defaults to the filter's `_id`."""
        evs = list(events)
        result = await coll.update_one(
            dict(filter), _update_with_events(update, evs), upsert=upsert
        )
        if result.modified_count or result.upserted_id is not None:
            target = result.upserted_id if result.upserted_id is not None else doc_id
            self._note(coll, target if target is not None else _id_of(filter), evs)
        return result

    async def find_one_and_update(
        self,
        coll: Collection,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Iterable[CloudEvent] = (),
        *,
        projection: Mapping[str, Any] | None = None,
        upsert: bool = False,
        after: bool = True,
    ) -> dict[str, Any] | None:
        """`find_one_and_update` carrying `events`; returns the document (after the change by
        default, without the outbox), or None when nothing matched."""
        evs = list(events)
        doc = await coll.find_one_and_update(
            dict(filter),
            _update_with_events(update, evs),
            projection={**without_outbox(), **(projection or {})},
            upsert=upsert,
            return_document=ReturnDocument.AFTER if after else ReturnDocument.BEFORE,
        )
        if doc is not None or upsert:
            self._note(coll, doc["_id"] if doc is not None else _id_of(filter), evs)
        return doc

    async def bulk(
        self, coll: Collection, writes: list[Write], *, ordered: bool = False
    ) -> BulkWriteResult | None:
        """One `bulk_write` of many documents' writes, each with its own events. A write
        that fails (a duplicate key) raises BulkWriteError as usual; the events of the writes
        that did land are still published (the relay reads them from their documents)."""
        if not writes:
            return None
        try:
            result = await coll.bulk_write([w.op for w in writes], ordered=ordered)
        except BaseException:
            for w in writes:
                if w.events:
                    self._note(coll, w.doc_id, None)
            raise
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
        return result

    async def insert_many(
        self,
        coll: Collection,
        documents: list[Mapping[str, Any]],
        events: Mapping[Any, list[CloudEvent]],
    ) -> list[Any]:
        """Insert new documents with deterministic ids, each with its events (by document id),
        in the outbox's batch form: the events of up to a thousand documents ride in one batch
        document, not in each (shared/outbox_batch.py), so publishing them costs one write per
        batch instead of one per document. A duplicate key means written before: that document
        is skipped with its events (the earlier write's stand). Returns the ids inserted now."""
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

    async def commit(self, *, wait: bool = False) -> None:
        """Hand the relay, in one call, everything written since the last commit: the
        documents by collection, each with its events, and the batch documents. The relay
        decides how each part goes out (shared/outbox.py). With `wait`, the publishing is
        awaited here (an import paces its chunks by it) instead of running on."""
        written, self._written = self._written, {}
        batches, self._batches = self._batches, []
        by_coll: dict[str, Written] = {}
        for (name, doc_id), (coll, events) in written.items():
            by_coll.setdefault(name, Written(coll, {})).documents[doc_id] = events
        commit = Committed(list(by_coll.values()), batches, wait)
        if commit:
            await self._relay.committed(commit)


def _id_of(filter: Mapping[str, Any]) -> Any:
    value = filter.get("_id")
    if isinstance(value, Mapping) and "$eq" in value:
        return value["$eq"]
    if value is None:
        raise ValueError("a write with events needs the document's _id (in the filter or doc_id)")
    return value


# -- erasure: what an outbox may still hold about a forgotten person -----------------------------

#: `$unset` of the events set aside as unpublishable (with their error strings): erasure adds it
#: to the update that forgets a document's personal fields.
FORGET_DEAD_EVENTS: dict[str, str] = {"outbox_dead": ""}


async def drop_pending(coll: Collection, doc_ids: list[Any], event_type: str) -> None:
    """Drop the pending, unpublished events of `event_type` in these documents (their data
    would reach the stream after an erasure purged it). Each removal is guarded like the
    relay's own, so the pending counter drops once per entry."""
    if not doc_ids:
        return
    async for doc in coll.find({"_id": {"$in": list(doc_ids)}}, {"outbox": 1}):
        for event_id, entry in (doc.get("outbox") or {}).items():
            if not isinstance(entry, dict) or entry.get("type") != event_type:
                continue
            await coll.update_one(
                {"_id": doc["_id"], f"outbox.{event_id}": {"$exists": True}},
                {"$unset": {f"outbox.{event_id}": ""}, "$inc": {"outbox_pending": -1}},
            )


# -- documents read whole (erasure's tombstone swap, the import's prepared documents) ------------


def pending_events(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events a document read whole still holds unpublished, as stored (JSON)."""
    return list((document.get("outbox") or {}).values())


def carrying(
    document: Mapping[str, Any], events: Iterable[CloudEvent | Mapping[str, Any]]
) -> dict[str, Any]:
    """`document` holding exactly these events as pending, in the form a write stores them
    (for a document built before a bulk write, or a replacement that keeps some events)."""
    entries: dict[str, dict[str, Any]] = {}
    for event in events:
        stored = event.model_dump(mode="json") if isinstance(event, CloudEvent) else dict(event)
        entries[stored["id"]] = stored
    return {**document, "outbox": entries, "outbox_pending": len(entries)}


def unchanged_pending(document: Mapping[str, Any]) -> dict[str, Any]:
    """A write guard for replacing a document read whole: its pending events are still the
    ones read (the relay removes a published event without bumping the document's version)."""
    count = document.get("outbox_pending")
    return {"outbox_pending": count if count is not None else {"$exists": False}}


def has_pending() -> dict[str, Any]:
    """A filter: documents with an event not yet published (served by the relay's index)."""
    return {"outbox_pending": {"$gt": 0}}


def pending_only() -> dict[str, int]:
    """A projection: a document's pending events alone."""
    return {"outbox": 1}
