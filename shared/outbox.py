"""Transactional outbox: events ride in the changed document until JetStream acknowledges them.

The relay publishes what a unit of work's commit hands it (`committed`, its one entry point:
shared/outbox_port.py) and sweeps for what a crash left. The layout of a document's outbox is
written by the unit of work (shared/uow.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from pymongo import UpdateOne

from shared import tracing
from shared.bus import Bus
from shared.clock import woken_or_timeout
from shared.events import CloudEvent
from shared.logs import event_context
from shared.metrics import Metrics
from shared.outbox_batch import BATCHES, BatchRelay, Documents
from shared.outbox_dead import Unpublishable
from shared.outbox_port import Collection, Committed

log = logging.getLogger("sarafan.outbox")

__all__ = ["Collection", "Relay"]

#: Documents the sweeper publishes together (one read, concurrent publishes, one bulk mark).
SWEEP_BATCH = 200


class Relay:
    """Publishes outbox entries right after each commit, and sweeps for what a crash left."""

    def __init__(
        self,
        bus: Bus,
        collections: list[Collection],
        metrics: Metrics,
        sweep_seconds: float = 5.0,
    ) -> None:
        self.bus = bus
        self.collections = {c.name: c for c in collections}
        self.metrics = metrics
        self.sweep_seconds = sweep_seconds
        self._in_flight: set[tuple[str, Any]] = set()
        self._again: set[tuple[str, Any]] = set()
        self.unpublishable = Unpublishable(bus.service, metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._prepared = False
        #: The batch form (`shared/outbox_batch.py`): a fan-out's events in one document.
        self.batches = BatchRelay(self)

    def watch(self, collection: Collection, *, batched: bool = False) -> None:
        """Sweep `collection` too (a unit of work calls this on its first write with events,
        before its commit; the index the sweep reads by is made in the background). `batched`:
        sweep the batch documents too (before a unit of work writes one)."""
        if batched:
            if not self.batches.on:
                self.batches.on = True
                self._spawn(self._index(self.bus.db[BATCHES], "lease_until_ms"))
            return
        if collection.name in self.collections:
            return
        self.collections[collection.name] = collection
        self._spawn(self._index(collection))

    @staticmethod
    async def _index(collection: Collection, field: str = "outbox_pending") -> None:
        with contextlib.suppress(Exception):
            await collection.create_index(field, sparse=True)

    async def _discover(self) -> None:
        """The collections that held an outbox before this process started (their sweep
        index says so): what a crash left in them is swept without any write first."""
        db = self.bus.db
        for name in await db.list_collection_names():
            if name == BATCHES:
                await db[BATCHES].create_index("lease_until_ms", sparse=True)
                self.batches.on = True
            if name in self.collections or name == BATCHES:
                continue
            coll = db[name]
            indexes = await coll.index_information()
            if any(spec.get("key") == [("outbox_pending", 1)] for spec in indexes.values()):
                self.collections[name] = coll

    async def prepare(self) -> None:
        """The sweep's indexes and the collections an earlier process left an outbox in
        (MongoDB); `start` does it when not yet."""
        for coll in self.collections.values():
            await coll.create_index("outbox_pending", sparse=True)
        await self._discover()
        self._prepared = True

    async def start(self) -> None:
        if not self._prepared:
            await self.prepare()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweeper")
        self.bus.on_connected.append(self.wake)

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for t in [*self._tasks, self._sweeper]:
            if t is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 5)

    async def wake(self) -> None:
        self._wake.set()

    async def committed(self, commit: Committed) -> None:
        """Publish what one commit wrote: the one entry point of a unit of work
        (shared/outbox_port.py). Each batch document in the batch form; each collection's
        documents in one flush (a single document: its own, without reading it back). In the
        background, or awaited here when the commit asked (`wait`)."""
        for batch in commit.batches:
            work = self._publish_batch(batch.collection, batch.batch_id, batch.documents)
            if commit.wait:
                await work
            else:
                self._spawn(work)
        for written in commit.written:
            coll, docs = written.collection, written.documents
            self.watch(coll)
            if commit.wait:
                await self._publish_now(coll, docs)
            elif len(docs) == 1:
                [(doc_id, events)] = docs.items()
                self._kick(coll, doc_id, events)
            else:
                self._spawn(self._publish_now(coll, docs))

    def _kick(
        self, collection: Collection, doc_id: Any, events: list[CloudEvent] | None = None
    ) -> None:
        """Publish what this document holds now, in the background. `events`, when the
        caller has them, go out without reading the document back first."""
        self.watch(collection)
        self._spawn(self.flush(collection.name, doc_id, events))

    async def _publish_now(
        self, collection: Collection, docs: dict[Any, list[CloudEvent] | None]
    ) -> int:
        """Many documents' events (a document given None has them read back); returns how
        many went."""
        known = {d: e for d, e in docs.items() if e is not None}
        unknown = [d for d, e in docs.items() if e is None]
        sent = await self.flush_many(collection, list(known), known) if known else 0
        return sent + (await self.flush_many(collection, unknown) if unknown else 0)

    async def _publish_batch(self, collection: Collection, batch_id: str, docs: Documents) -> int:
        """A batch's events right after its insert (`docs`: the documents it created, with
        their events), then the batch document removed (shared/outbox_batch.py)."""
        try:
            return await self.batches.publish(collection, batch_id, docs)
        except Exception:
            log.exception("outbox batch %s failed; left to the sweeper", batch_id)
            return 0

    @contextlib.contextmanager
    def claimed(self, key: tuple[str, Any]) -> Iterator[bool]:
        """Claim one thing to publish (a document, a batch) for this block: True when it was
        free, False when another publishing round of this relay holds it (leave it to that)."""
        if key in self._in_flight:
            yield False
            return
        self._in_flight.add(key)
        try:
            yield True
        finally:
            self._in_flight.discard(key)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(
        self, collection_name: str, doc_id: Any, events: list[CloudEvent] | None = None
    ) -> int:
        """Publish every pending event of one document, oldest first; returns how many went."""
        key = (collection_name, doc_id)
        if not self.bus.connected:
            return 0
        if key in self._in_flight:
            # Another flush of this document is running: it goes round once more for what
            # this write added, instead of leaving it to the next sweep.
            self._again.add(key)
            return 0
        self._in_flight.add(key)
        coll = self.collections[collection_name]
        sent = 0
        try:
            while True:
                if events is None:
                    doc = await coll.find_one({"_id": doc_id}, {"outbox": 1})
                    raw = list(((doc or {}).get("outbox") or {}).values())
                    events = [CloudEvent.model_validate(e) for e in raw]
                ok, count = await self._publish_all(coll, doc_id, events)
                sent += count
                if not ok or key not in self._again:
                    break
                self._again.discard(key)
                events = None
        except Exception:
            log.exception("outbox flush of %s/%s failed", collection_name, doc_id)
        finally:
            self._in_flight.discard(key)
            self._again.discard(key)
        return sent

    async def flush_many(
        self,
        collection: Collection,
        doc_ids: list[Any],
        events: dict[Any, list[CloudEvent]] | None = None,
    ) -> int:
        """Publish the pending events of many documents at once: one read (none when the
        caller hands the events it just wrote, keyed by document), concurrent publishes (each
        with its PubAck and `Nats-Msg-Id`), one bulk write of the guarded marks. For fan-out
        and imports, where one cause writes thousands of documents.

        Documents another flush is publishing are left to it (it goes round again for what
        was added meanwhile), so the sweeper never publishes a batch in hand a second time.
        """
        if not self.bus.connected or not doc_ids:
            return 0
        name = collection.name
        mine = []
        for doc_id in dict.fromkeys(doc_ids):
            key = (name, doc_id)
            if key in self._in_flight:
                self._again.add(key)
            else:
                self._in_flight.add(key)
                mine.append(doc_id)
        try:
            pending = await self._pending_of(collection, mine, events)
            acked = await asyncio.gather(
                *(self.publish_one(event) for _, event in pending), return_exceptions=True
            )
            marks = [
                UpdateOne(
                    {"_id": doc_id, f"outbox.{event.id}": {"$exists": True}},
                    {"$unset": {f"outbox.{event.id}": ""}, "$inc": {"outbox_pending": -1}},
                )
                for (doc_id, event), ack in zip(pending, acked, strict=True)
                if not isinstance(ack, BaseException)
            ]
            for (doc_id, event), ack in zip(pending, acked, strict=True):
                if isinstance(ack, Exception):
                    await self._failed_for_good(collection, doc_id, event.id, event, ack)
            if marks:
                await collection.bulk_write(marks, ordered=False)
        finally:
            again = [d for d in mine if (name, d) in self._again]
            for doc_id in mine:
                self._in_flight.discard((name, doc_id))
                self._again.discard((name, doc_id))
        for doc_id in again:  # written to while we published: what they added goes now
            self._kick(collection, doc_id)
        return len(marks)

    async def _pending_of(
        self,
        collection: Collection,
        doc_ids: list[Any],
        events: dict[Any, list[CloudEvent]] | None,
    ) -> list[tuple[Any, CloudEvent]]:
        if events is not None:
            return [
                (doc_id, event)
                for doc_id in doc_ids
                for event in sorted(events.get(doc_id, []), key=lambda e: e.time)
            ]
        if not doc_ids:
            return []
        docs = collection.find({"_id": {"$in": doc_ids}}, {"outbox": 1})
        return [
            (doc["_id"], CloudEvent.model_validate(raw))
            async for doc in docs
            for raw in sorted((doc.get("outbox") or {}).values(), key=lambda e: e["time"])
        ]

    async def _failed_for_good(
        self, coll: Collection, doc_id: Any, event_id: str, entry: Any, exc: BaseException
    ) -> bool:
        """Count a publish that failed for good; at the last attempt move the entry aside.
        True when it was moved (the caller goes on with the next events)."""
        if not self.unpublishable.gives_up(event_id, exc):
            return False
        dead = self.unpublishable.entry(entry, exc)
        moved = await coll.update_one(
            {"_id": doc_id, f"outbox.{event_id}": {"$exists": True}},
            {
                "$unset": {f"outbox.{event_id}": ""},
                "$set": {f"outbox_dead.{event_id}": dead},
                "$inc": {"outbox_pending": -1},
            },
        )
        if moved.modified_count:
            self.unpublishable.count(coll.name, doc_id, {event_id: dead})
        return True

    async def publish_one(self, event: CloudEvent) -> None:
        """Publish one event (PubAck awaited) in a producer span of the trace it was made in."""
        with (
            event_context(event.id, event.correlationid),
            tracing.publishing(self.bus.service, event),
        ):
            await self.bus.publish(event)

    async def _publish_all(
        self, coll: Collection, doc_id: Any, events: list[CloudEvent]
    ) -> tuple[bool, int]:
        sent = 0
        for event in sorted(events, key=lambda e: e.time):
            with event_context(event.id, event.correlationid):
                try:
                    await self.publish_one(event)
                except Exception as exc:
                    if await self._failed_for_good(coll, doc_id, event.id, event, exc):
                        continue  # set aside: the events after it go on
                    # Not acknowledged = maybe not stored: keep it; the same id is retried
                    # later and the duplicate window drops a copy that did get stored.
                    log.warning("outbox publish of %s failed: %r; kept for retry", event.type, exc)
                    return False, sent
                # Guarded so two relays (or replicas) never decrement twice.
                await coll.update_one(
                    {"_id": doc_id, f"outbox.{event.id}": {"$exists": True}},
                    {"$unset": {f"outbox.{event.id}": ""}, "$inc": {"outbox_pending": -1}},
                )
                sent += 1
        return True, sent

    async def sweep(self) -> int:
        """Publish everything still pending in any collection, a batch of documents at a time
        (one read of their outboxes per batch); returns how many events went."""
        sent, pending_total = await self.batches.sweep(self.bus.db)
        # A copy: a unit of work may start watching another collection while this awaits.
        for coll in list(self.collections.values()):
            batch: dict[Any, list[CloudEvent]] = {}
            async for doc in coll.find(
                {"outbox_pending": {"$gt": 0}}, {"outbox": 1, "outbox_pending": 1}
            ):
                pending_total += int(doc.get("outbox_pending") or 0)
                batch[doc["_id"]] = await self._entries(coll, doc)
                if len(batch) >= SWEEP_BATCH:
                    sent += await self._sweep_batch(coll, batch)
                    batch = {}
            if batch:
                sent += await self._sweep_batch(coll, batch)
        self.metrics.outbox_pending.labels(self.bus.service).set(max(pending_total - sent, 0))
        return sent

    async def _entries(self, coll: Collection, doc: dict[str, Any]) -> list[CloudEvent]:
        """A document's pending events; an entry that is no valid event is set aside."""
        events = []
        for event_id, raw in (doc.get("outbox") or {}).items():
            try:
                events.append(CloudEvent.model_validate(raw))
            except ValueError as exc:
                self.unpublishable.condemn(event_id)
                await self._failed_for_good(coll, doc["_id"], event_id, raw, exc)
        return events

    async def _sweep_batch(self, coll: Collection, batch: dict[Any, list[CloudEvent]]) -> int:
        return await self.flush_many(coll, list(batch), batch)

    async def _sweep_loop(self) -> None:
        while True:
            await woken_or_timeout(self._wake, self.sweep_seconds)
            self._wake.clear()
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox sweep failed: %r", exc)
