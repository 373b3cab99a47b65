"""The `deliveries` collection: the inbox, the delivery log and the work queue in one.

Times that change after the insert (`due_ms`, `delivered_ms`, ...) are integer epoch
milliseconds: nx-27017 stores a date `$set` by path as a string, which range queries then
miss (tests/integration/test_mongo_conformance.py); numbers behave alike on both servers.
Dates written once, in the insert (`created_at`), stay dates for reading; sorting and cursors
use `order_key` (`created_ms`, then the id, in one string), because nx-27017 also compares
dates only to the second. Every filter on a field other than `_id` goes through
`shared.query.where()` (docs/patterns.md, "Queries that stay fast"); the index each query uses
is listed in docs/notifier.md, "Queries and indexes".
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import CloudEvent
from shared.outbox_layout import without_outbox
from shared.query import Collection, order_key, where
from shared.uow import Repository, Step, UnitOfWork, Write

#: Deliveries a worker may claim: waiting ones, and sending ones whose worker's lease ran out.
CLAIMABLE = ["pending", "deferred", "sending"]
#: Backfills at start-up write this many documents per bulk write.
BACKFILL_CHUNK = 500
#: The log and the inbox, newest first: one string field, so a page is one index range.
NEWEST_FIRST = [("order_key", DESCENDING)]
#: A range every order key satisfies: the first page uses the same index as the following ones
#: (an empty filter would read the whole collection to sort it).
ANY_KEY = {"$gt": ""}


def delivery_order_key(doc: Mapping[str, Any]) -> str:
    """Newest first sorts on this; unique because the id is, even when a fan-out gives
    thousands of deliveries the same millisecond."""
    return order_key(int(doc["created_ms"]), str(doc["_id"]))


def failed_indexes(exc: BulkWriteError) -> set[int]:
    return {int(e["index"]) for e in exc.details.get("writeErrors", [])}


async def fill_in(
    collection: Collection,
    missing: Doc,
    projection: Doc,
    fields: Callable[[Doc], Doc],
) -> None:
    """Set `fields(doc)` on every document matching `missing`, a chunk at a time.

    Each chunk is queried afresh rather than read through one long cursor: the writes take the
    documents out of the result, and a cursor that pages by offset would skip some.
    """
    while True:
        found = await collection.find(missing, projection).limit(BACKFILL_CHUNK).to_list(None)
        if not found:
            return
        await collection.bulk_write(
            [UpdateOne({"_id": doc["_id"]}, {"$set": fields(doc)}) for doc in found],
            ordered=False,
        )


class DeliveryRecords:
    """The reads and writes of `deliveries` (part of `NotifierStore`); the writes made in a use
    case's unit of work are staged by `DeliveriesRepository` (below), which it owns."""

    deliveries: Collection

    async def ensure_delivery_indexes(self) -> None:
        d = self.deliveries
        # The log and the inbox: each filter combination ends in order_key, so the index
        # serves the equality, the cursor's range and the sort together (a page reads a page).
        # A member's three filters together walk that member's (member, channel) range and
        # check the status on the rows: bounded by one member's deliveries. The operator's
        # "failed e-mails" (channel with status) and "every webhook" (channel alone) have their
        # own, or a rare channel would be read out of every in-app delivery of every fan-out.
        await d.create_index("order_key")
        for fields in (
            ("member_id",),
            ("member_id", "channel"),
            ("member_id", "status"),
            ("channel",),
            ("channel", "status"),
        ):
            await d.create_index([*((f, ASCENDING) for f in fields), ("order_key", ASCENDING)])
        await d.create_index([("status", ASCENDING), ("order_key", ASCENDING)])
        # The work queue: one range per claimable status.
        await d.create_index([("status", ASCENDING), ("due_ms", ASCENDING)])
        await d.create_index("claim", sparse=True)
        await d.create_index([("cause_event_id", ASCENDING), ("channel", ASCENDING)])
        # Deliveries stored before order_key existed get theirs once; afterwards this finds
        # nothing (`$exists: False` is an index lookup of the missing key).
        await fill_in(
            d,
            where(order_key={"$exists": False}),
            {"created_ms": 1},
            lambda doc: {"order_key": delivery_order_key({"created_ms": 0, **doc})},
        )

    async def claim_due(self, now: datetime, limit: int, lease: timedelta, token: str) -> list[Doc]:
        """Claim up to `limit` due deliveries for this worker; other workers never get the same.

        Three steps for the whole batch: find candidates (one indexed range on (status, due_ms)
        per claimable status, concurrently, merged by due time), one bulk write of conditional
        updates pinned by `_id` (each document's update is atomic, so a document another
        worker claimed in between no longer matches its status and due time), then read back
        what carries our token. The lease moves `due_ms` forward: a worker that dies mid-send
        leaves the delivery due again when it ends.
        """
        now_ms = epoch_ms(now)
        due = {"due_ms": {"$lte": now_ms}}

        async def candidates(status: str) -> list[tuple[int, str, str]]:
            found = self.deliveries.find(where(status=status, **due), {"_id": 1, "due_ms": 1})
            docs = await found.sort("due_ms", ASCENDING).limit(limit).to_list(None)
            return [(d["due_ms"], d["_id"], status) for d in docs]

        per_status = await asyncio.gather(*(candidates(s) for s in CLAIMABLE))
        chosen = list(heapq.merge(*per_status))[:limit]
        if not chosen:
            return []
        claim = {
            "status": "sending",
            "claim": token,
            "due_ms": now_ms + int(lease.total_seconds() * 1000),
        }
        # One update per id (the primary key), not update_many over `_id $in`: with a long
        # queue the server may walk the (status, due_ms) range instead of the ids.
        await self.deliveries.bulk_write(
            [
                UpdateOne(where({"_id": delivery_id, "status": status, **due}), {"$set": claim})
                for _, delivery_id, status in chosen
            ],
            ordered=False,
        )
        return await self.deliveries.find(where(claim=token), without_outbox()).to_list(None)

    def outcome(
        self, delivery_id: str, token: str, fields: Doc, events: Iterable[CloudEvent] = ()
    ) -> Write:
        """The write of an attempt's outcome (the delivery's `fields` it changes, with the
        events it raises), guarded by the claim token: it changes nothing if this worker no
        longer holds the claim, and it releases the claim. Written in groups by the dispatcher
        (`Outcomes`), one bulk write each."""
        update = {"$set": dict(fields), "$unset": {"claim": ""}}
        return Write.update(
            delivery_id, where({"_id": delivery_id, "claim": token}), update, events
        )

    async def cancel_waiting(self, member_id: str) -> None:
        """Every delivery of the member not sent yet is cancelled (the member left)."""
        # One indexed update per claimable status (member_id, status) instead of `$in`.
        await asyncio.gather(
            *(
                self.deliveries.update_many(
                    where(member_id=member_id, status=status),
                    {
                        "$set": {"status": "cancelled", "last_error": "member left"},
                        "$unset": {"claim": ""},
                    },
                )
                for status in CLAIMABLE
            )
        )

    async def inbox(self, member_id: str, limit: int, after: str | None) -> list[Doc]:
        return await self.log({"member_id": member_id, "channel": "inapp"}, limit, after)

    async def log(self, filters: Doc, limit: int, after: str | None) -> list[Doc]:
        """Newest first, strictly after the cursor's order key: O(page) through the index that
        ends in order_key (the key is unique, so deliveries sharing an instant are not lost)."""
        query = where(filters, order_key={"$lt": after} if after is not None else ANY_KEY)
        cursor = self.deliveries.find(query, without_outbox("items"))
        return await cursor.sort(NEWEST_FIRST).limit(limit).to_list(None)


class DeliveriesRepository(Repository):
    """The writes of deliveries made in a use case's unit of work (`uow.deliveries`): new
    deliveries, digest items, attempts' outcomes. Each is only staged and returned as a step;
    the owner's commit makes it and publishes the events it carries."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: DeliveryRecords) -> None:
        super().__init__(uow)
        self.store = store

    def insert(
        self, docs: list[Doc], events: Mapping[str, list[CloudEvent]] | None = None
    ) -> Step[list[str]]:
        """Stage the insert of deliveries with deterministic ids; the step's outcome is the ids
        that are new (a redelivery's duplicates are not). Each carries its events (by delivery
        id) in the outbox's batch form: one batch document per thousand deliveries holds them,
        published on its commit and removed in one write, instead of an update of every
        delivery (docs/notifier.md, "Fan-out")."""
        # Computed here for every insert, so a copied document (a fallback) gets its own.
        docs = [{**d, "order_key": delivery_order_key(d)} for d in docs]
        return self.uow.insert_many(self.store.deliveries, docs, events or {})

    def add_to_digests(self, entries: list[tuple[Doc, str, Doc]]) -> Step[Any]:
        """Stage the addition of items to waiting digest deliveries (created on first use), in
        one round trip. entries: (the digest delivery as it is created, item key, item). After
        the commit, the step's `refused` lists the entries whose digest was already claimed or
        sent: the caller moves those to the next day."""
        writes = [
            Write.update(
                doc["_id"],
                # The filter's equalities (_id, status) seed the new document by themselves.
                where({"_id": doc["_id"], "status": "deferred"}),
                {
                    "$set": {f"items.{key}": item},
                    "$setOnInsert": {
                        **{k: v for k, v in doc.items() if k not in ("_id", "status")},
                        "order_key": delivery_order_key(doc),
                    },
                },
                upsert=True,
            )
            for doc, key, item in entries
        ]
        return self.uow.bulk(self.store.deliveries, writes, skip_duplicates=True)

    def record(self, writes: list[Write]) -> Step[Any]:
        """Stage outcomes (`DeliveryRecords.outcome`) in one bulk write; their events are
        published on the commit."""
        return self.uow.bulk(self.store.deliveries, writes)
