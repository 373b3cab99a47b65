"""The outbox's batch form: the events of many new documents in one document of their own.

A fan-out inserts thousands of documents, each announced by an event. In the plain form
(`outbox.py`) each event rides in its document and is removed from it after the PubAck: one
update per document, which on the embedded server costs as much as the insert itself. In the
batch form a *batch document* in `outbox_batches` holds the events of up to `BATCH_MAX` new
documents, and each of those documents carries the batch's id (`outbox_batch`) in its insert:

1. the batch document is inserted, with every event and the id of the document it announces;
2. the documents are inserted (unordered; a duplicate key means written before, by an earlier
   batch, and keeps that batch's id);
3. the writer publishes the events of the documents its insert created (`Nats-Msg-Id` = event
   id, PubAck awaited) and removes the batch document: one delete for the whole batch.

**Why nothing is lost or doubled.** An event counts only if its document exists *and* carries
its batch's id: the document's own insert is the atomic commit of its event, as in the plain
form. A crash after 1 leaves a batch whose documents do not exist (nothing is published for
them; the cause, not acknowledged, writes them again under a new batch); after 2, or in the
middle of 2, the documents that exist carry the id and are published by the sweeper, the others
are not; after 3, before the delete, the sweeper publishes them again under the same event ids,
which JetStream drops inside its duplicate window. A document written by an earlier batch keeps
that batch's id, so its event is published by that batch alone, never by a later one.

**Who publishes.** The writer, right after its insert. The sweeper takes a batch only after its
lease (`BATCH_LEASE`), since before that the insert of step 2 may still be running and the
documents not there yet; a writer that cannot publish now (NATS away, no PubAck) releases its
batch to the sweeper at once with one update. Two sweepers publish the same ids (dropped as
duplicates) and delete the same document (idempotent).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pymongo.errors import BulkWriteError

from shared.clock import epoch_ms, utcnow
from shared.events import CloudEvent
from shared.store import only_duplicates

if TYPE_CHECKING:
    from shared.outbox import Relay

#: The collection of batch documents, in the database of the documents they announce.
BATCHES = "outbox_batches"
#: The field a document of a batch carries: the id of the batch whose events announce it.
BATCH_FIELD = "outbox_batch"
#: Documents (and their events) per batch document: about 0.5 KB an event, far below a
#: document's 16 MB, and one insert_many each.
BATCH_MAX = 1000
#: How long a batch belongs to its writer before the sweeper takes it: the writer's insert of
#: the documents may still be running until then. Below JetStream's duplicate window (2 min),
#: so a sweeper that publishes what a slow writer already did is deduplicated.
BATCH_LEASE = timedelta(seconds=30)

Documents = dict[Any, list[CloudEvent]]


def batch_document(batch_id: str, collection: str, events: Documents) -> dict[str, Any]:
    """The batch document: every event (by id) and the document it announces (`owners`)."""
    entries = {e.id: e.model_dump(mode="json") for es in events.values() for e in es}
    owners = {e.id: doc_id for doc_id, es in events.items() for e in es}
    lease = epoch_ms(utcnow()) + int(BATCH_LEASE.total_seconds() * 1000)
    return {
        "_id": batch_id,
        "collection": collection,
        "lease_until_ms": lease,
        "outbox": entries,
        "owners": owners,
    }


def new_batch_id() -> str:
    return uuid.uuid4().hex


async def insert_batch(
    coll: Any, documents: Sequence[Mapping[str, Any]], events: Mapping[Any, list[CloudEvent]]
) -> tuple[str | None, list[Any]]:
    """Steps 1 and 2 for at most `BATCH_MAX` new documents: returns the batch id (None when no
    document had events) and the ids inserted now (a duplicate key: written before, skipped).

    Any other error is raised; the batch document stays and the sweeper settles it after its
    lease, from what the documents say."""
    announced = {d["_id"]: list(events.get(d["_id"]) or ()) for d in documents}
    announced = {k: v for k, v in announced.items() if v}
    batch_id = new_batch_id() if announced else None
    if batch_id is not None:
        await coll.database[BATCHES].insert_one(batch_document(batch_id, coll.name, announced))
    marked = [{**d, BATCH_FIELD: batch_id} if d["_id"] in announced else dict(d) for d in documents]
    try:
        await coll.insert_many(marked, ordered=False)
        return batch_id, [d["_id"] for d in documents]
    except BulkWriteError as exc:
        if not only_duplicates(exc):
            raise
        dup = {int(e["index"]) for e in exc.details.get("writeErrors", [])}
        return batch_id, [d["_id"] for i, d in enumerate(documents) if i not in dup]


def chunks(documents: Sequence[Mapping[str, Any]]) -> list[Sequence[Mapping[str, Any]]]:
    return [documents[i : i + BATCH_MAX] for i in range(0, len(documents), BATCH_MAX)]


def ordered(events: Documents) -> list[tuple[Any, CloudEvent]]:
    """(document id, event) pairs, each document's events oldest first."""
    return [(d, e) for d, es in events.items() for e in sorted(es, key=lambda e: e.time)]


def pending_entries(batch: Mapping[str, Any]) -> tuple[list[CloudEvent], list[tuple[str, Any]]]:
    """A stored batch's events that can be read, and (event id, raw entry) of those that
    cannot (set aside as dead by the caller)."""
    readable, broken = [], []
    for event_id, raw in (batch.get("outbox") or {}).items():
        try:
            readable.append(CloudEvent.model_validate(raw))
        except ValueError:
            broken.append((event_id, raw))
    return readable, broken


async def still_announced(
    coll: Any, batch_id: str, events: list[CloudEvent], owners: Mapping[str, Any]
) -> tuple[Documents, list[str]]:
    """Of a stored batch's events, those whose document exists with this batch's id (by
    document), and the ids of the others (never to be published: their document was not
    written by this batch). One read by primary key."""
    doc_ids = list(dict.fromkeys(owners[e.id] for e in events if e.id in owners))
    marked: set[Any] = set()
    if doc_ids:
        async for doc in coll.find({"_id": {"$in": doc_ids}}, {BATCH_FIELD: 1}):
            if doc.get(BATCH_FIELD) == batch_id:
                marked.add(doc["_id"])
    found: Documents = {}
    void: list[str] = []
    for event in events:
        owner = owners.get(event.id)
        if owner in marked:
            found.setdefault(owner, []).append(event)
        else:
            void.append(event.id)
    return found, void


def settle_update(done: list[str], dead: Mapping[str, Any], pending_left: bool) -> dict[str, Any]:
    """The one update of a batch document not fully published: the settled entries removed,
    the dead ones set aside, and the batch released to the sweeper (lease 0) while events are
    left, or parked (no lease: never read again) when only dead ones remain."""
    unset = {f"outbox.{i}": "" for i in [*done, *dead]}
    put: dict[str, Any] = {f"outbox_dead.{i}": v for i, v in dead.items()}
    if pending_left:
        put["lease_until_ms"] = 0
    else:
        unset["lease_until_ms"] = ""
    # No empty operator: MongoDB refuses `{"$unset": {}}`.
    return {k: v for k, v in (("$set", put), ("$unset", unset)) if v}


def due_batches() -> dict[str, Any]:
    """A filter: batches whose lease is over (or released), served by the lease index."""
    return {"lease_until_ms": {"$lt": epoch_ms(utcnow())}}


class BatchRelay:
    """The relay's part for batches (`Relay.batches`): the writer's publishing round and the
    sweep of what a crash or an outage left."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        #: Swept once this process wrote a batch or found the collection at start.
        self.on = False

    async def publish(self, coll: Any, batch_id: str, events: Documents) -> int:
        """Step 3 for the writer: the events of the documents its insert created, then the
        batch document removed (or released to the sweeper for what did not go)."""
        with self.relay.claimed((BATCHES, batch_id)) as mine:
            if not mine:
                return 0
            return await self._round(coll, batch_id, events, [], {}, keep=False)

    async def sweep(self, db: Any) -> tuple[int, int]:
        """Publish the events of every batch whose lease is over, each checked against its
        documents; returns (events published, events found)."""
        sent = found = 0
        if not self.on or not self.relay.bus.connected:
            return 0, 0
        async for batch in db[BATCHES].find(due_batches()).batch_size(8):
            with self.relay.claimed((BATCHES, batch["_id"])) as mine:
                if not mine:
                    continue
                events, broken = pending_entries(batch)
                coll = db[batch["collection"]]
                announced, void = await still_announced(
                    coll, batch["_id"], events, batch.get("owners") or {}
                )
                dead = {
                    i: self.relay.unpublishable.entry(raw, ValueError("not an event"))
                    for i, raw in broken
                }
                found += len(events)
                keep = bool(batch.get("outbox_dead"))
                sent += await self._round(coll, batch["_id"], announced, void, dead, keep=keep)
        return sent, found

    async def _round(
        self,
        coll: Any,
        batch_id: str,
        events: Documents,
        void: list[str],
        dead: dict[str, Any],
        *,
        keep: bool,
    ) -> int:
        """Publish concurrently (each with its PubAck), then one write of the batch document:
        deleted when all went (and nothing is kept), otherwise what went removed."""
        pairs = ordered(events)
        acked: list[str] = []
        if self.relay.bus.connected and pairs:
            results = await asyncio.gather(
                *(self.relay.publish_one(e) for _, e in pairs), return_exceptions=True
            )
            for (_, event), result in zip(pairs, results, strict=True):
                if not isinstance(result, BaseException):
                    acked.append(event.id)
                elif isinstance(result, Exception) and self.relay.unpublishable.gives_up(
                    event.id, result
                ):
                    dead[event.id] = self.relay.unpublishable.entry(event, result)
        left = len(acked) + len([e for _, e in pairs if e.id in dead]) < len(pairs)
        batches = coll.database[BATCHES]
        if not left and not dead and not keep:
            await batches.delete_one({"_id": batch_id})
        else:
            await batches.update_one({"_id": batch_id}, settle_update([*acked, *void], dead, left))
        if dead:
            self.relay.unpublishable.count(BATCHES, batch_id, dead)
        return len(acked)
