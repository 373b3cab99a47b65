"""The notifier's MongoDB collections: members projection, deliveries (the work queue), budgets.

Times that change after the insert (`due_ms`, `delivered_ms`, ...) are integer epoch
milliseconds: nx-27017 stores a date `$set` by path as a string, which range queries then
miss (tests/integration/test_mongo_conformance.py); numbers behave alike on both servers.
Dates written once, in the insert (`created_at`), stay dates for reading; sorting and
cursors use `order_key` (`created_ms`, then the id, in one string), because nx-27017 also
compares dates only to the second.

Every filter on a field other than `_id` goes through `shared.query.where()`: nx-27017 serves
only the `$eq`/range form from an index (docs/patterns.md, "Queries that stay fast"). The
indexes each query uses are listed in docs/notifier.md, "Queries and indexes".
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.notifier.domain import level_rank
from shared.events import Audience
from shared.http import forget_requests_of
from shared.query import Collection, by_ids, order_key, where
from shared.store import epoch_ms, only_duplicates

#: Deliveries a worker may claim: waiting ones, and sending ones whose worker's lease ran out.
CLAIMABLE = ["pending", "deferred", "sending"]
PROJECTION_FIELDS = ("display_name", "region", "roles", "locale", "timezone")
#: Guards a projection write against an erased tombstone. `$nin`, not `$ne`: an upsert whose
#: filter has `$ne` raises a duplicate key on nx-27017 over a document lacking the field (a
#: member first seen through level-changed), where MongoDB updates it.
NOT_ERASED = {"status": {"$nin": ["erased"]}}
#: Backfills at start-up write this many documents per bulk write.
BACKFILL_CHUNK = 500
#: The log and the inbox, newest first: one string field, so a page is one index range.
NEWEST_FIRST = [("order_key", DESCENDING)]
#: A range every order key satisfies: the first page uses the same index as the following ones
#: (an empty filter would read the whole collection to sort it).
ANY_KEY = {"$gt": ""}


def coordinator_region(roles: Iterable[str] | None, region: str | None) -> str:
    """The region a member coordinates, "" for a member who is no coordinator.

    `roles` is an array: nx-27017 cannot find an array element through an index (equality
    with an array compares its JSON text), so this scalar copy is what the coordinators of a
    region are looked up by. Always present on an active member ("" when none), so that
    projections written before it existed are found and filled in at start-up.
    """
    return (region or "") if "coordinator" in (roles or ()) else ""


def delivery_order_key(doc: dict[str, Any]) -> str:
    """Newest first sorts on this; unique because the id is, even when a fan-out gives
    thousands of deliveries the same millisecond."""
    return order_key(int(doc["created_ms"]), str(doc["_id"]))


def _failed_indexes(exc: BulkWriteError) -> set[int]:
    return {int(e["index"]) for e in exc.details.get("writeErrors", [])}


async def _fill_in(
    collection: Collection,
    missing: dict[str, Any],
    projection: dict[str, Any],
    fields: Callable[[dict[str, Any]], dict[str, Any]],
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


class NotifierStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]
        self.deliveries = db["deliveries"]
        self.campaigns = db["campaigns"]
        self.budgets = db["budgets"]
        self.rates = db["rate_windows"]
        self.idempotency = db["idempotency_keys"]  # the kernel's, kept per request

    async def ensure_indexes(self) -> None:
        d = self.deliveries
        # The log and the inbox: each filter combination ends in order_key, so the index
        # serves the equality, the cursor's range and the sort together (a page reads a page).
        # Filters without their own index (channel alone, status with channel) walk the
        # nearest one in order and check the rest on the rows.
        await d.create_index("order_key")
        await d.create_index([("member_id", ASCENDING), ("order_key", ASCENDING)])
        await d.create_index(
            [("member_id", ASCENDING), ("channel", ASCENDING), ("order_key", ASCENDING)]
        )
        await d.create_index(
            [("member_id", ASCENDING), ("status", ASCENDING), ("order_key", ASCENDING)]
        )
        await d.create_index([("status", ASCENDING), ("order_key", ASCENDING)])
        # The work queue: one range per claimable status.
        await d.create_index([("status", ASCENDING), ("due_ms", ASCENDING)])
        await d.create_index("claim", sparse=True)
        await d.create_index([("cause_event_id", ASCENDING), ("channel", ASCENDING)])
        m = self.members
        # A campaign audience: consenting active members, region by region.
        await m.create_index(
            [("status", ASCENDING), ("consent.marketing", ASCENDING), ("region", ASCENDING)]
        )
        await m.create_index([("coordinator_region", ASCENDING), ("status", ASCENDING)])
        for coll in (self.budgets, self.rates):
            await coll.create_index("member_id")
            await coll.create_index("expires_at", expireAfterSeconds=0)
        # After the indexes: each backfill finds what it lacks through one of them.
        await self._backfill_order_keys()
        await self._backfill_coordinator_regions()

    async def _backfill_order_keys(self) -> None:
        # Deliveries stored before order_key existed get theirs once; afterwards this finds
        # nothing (`$exists: False` is an index lookup of the missing key).
        await _fill_in(
            self.deliveries,
            where(order_key={"$exists": False}),
            {"created_ms": 1},
            lambda doc: {"order_key": delivery_order_key({"created_ms": 0, **doc})},
        )

    async def _backfill_coordinator_regions(self) -> None:
        # Active members projected before coordinator_region existed get it once.
        await _fill_in(
            self.members,
            where(status="active", coordinator_region={"$exists": False}),
            {"roles": 1, "region": 1},
            lambda doc: {
                "coordinator_region": coordinator_region(doc.get("roles"), doc.get("region"))
            },
        )

    # -- the members projection -----------------------------------------------------------------

    async def project_joined(self, joined: list[dict[str, Any]]) -> None:
        """Upsert joined members in one round trip; an erased member is never brought back.

        A document made earlier by level-changed (no status yet) is matched and completed.
        """
        ops = [
            UpdateOne(
                where({"_id": m["member_id"], **NOT_ERASED}),
                {
                    "$set": {
                        **{k: m[k] for k in PROJECTION_FIELDS},
                        # Whole subdocuments: booleans stay booleans on nx-27017.
                        "contacts": m["contacts"],
                        "consent": m["consent"],
                        "status": "active",
                        "coordinator_region": coordinator_region(m["roles"], m["region"]),
                    }
                },
                upsert=True,
            )
            for m in joined
        ]
        if not ops:
            return
        try:
            await self.members.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):  # a duplicate = an erased tombstone: stays erased
                raise

    async def project_update(self, member_id: str, changes: dict[str, Any]) -> None:
        current = await self.members.find_one({"_id": member_id})
        if current is None or current.get("status") == "erased":
            return
        update: dict[str, Any] = {k: changes[k] for k in PROJECTION_FIELDS if k in changes}
        if "roles" in changes or "region" in changes:
            update["coordinator_region"] = coordinator_region(
                changes.get("roles", current.get("roles")),
                changes.get("region", current.get("region")),
            )
        contacts = dict(current.get("contacts") or {})
        contacts.update(changes.get("contacts") or {})
        contacts.update({k: changes[k] for k in ("email", "phone", "telegram") if k in changes})
        unblock = {
            f"blocked.{c}": ""
            for c in ("email", "telegram")
            if contacts.get(c) != (current.get("contacts") or {}).get(c)
        }
        update["contacts"] = contacts
        consent = dict(current.get("consent") or {})
        consent.update(changes.get("consent") or {})
        if "marketing" in changes:
            consent["marketing"] = changes["marketing"]
        update["consent"] = {k: bool(v) for k, v in consent.items()}
        body: dict[str, Any] = {"$set": update}
        if unblock:  # a new address deserves a new try
            body["$unset"] = unblock
        # Guarded: an erasure that lands between the read and this write wins.
        await self.members.update_one(where({"_id": member_id, **NOT_ERASED}), body)

    async def project_level(self, member_id: str, level: str) -> None:
        await self.project_levels({member_id: level})

    async def project_levels(self, levels: dict[str, str]) -> None:
        """Each member's level in one round trip (member id -> level).

        One write per member: the caller keeps the last level of a batch, so the writes may
        run in any order. A member not projected yet gets a document that member-joined
        completes later; an erased tombstone stays as it is (its duplicate key is ignored).
        """
        ops = [
            UpdateOne(
                where({"_id": member_id, **NOT_ERASED}),
                {"$set": {"level": level, "level_rank": level_rank(level)}},
                upsert=True,
            )
            for member_id, level in levels.items()
        ]
        if not ops:
            return
        try:
            await self.members.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise

    async def member_left(self, member_id: str, left_at: datetime) -> None:
        await self.members.update_one(
            where({"_id": member_id, **NOT_ERASED}),
            {"$set": {"status": "left", "left_ms": epoch_ms(left_at)}},
        )
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

    async def erase_member(self, member_id: str, left_at: datetime) -> None:
        """Forget the member: only an anonymous tombstone stays, and every message goes.

        Other members' messages that named this one keep only the id (`mentions`) and render
        the name from the projection when read, so the tombstone unnames them all at once
        (texts.py); nothing here grows with how often the member was mentioned.
        """
        await self.members.replace_one(
            {"_id": member_id}, {"status": "erased", "left_ms": epoch_ms(left_at)}, upsert=True
        )
        mine = where(member_id=member_id)
        await self.deliveries.delete_many(mine)
        await self.budgets.delete_many(mine)
        await self.rates.delete_many(mine)
        # The Idempotency-Key records of requests about the member keep whole responses.
        await forget_requests_of(self.idempotency, member_id)

    async def member(self, member_id: str) -> dict[str, Any] | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return await by_ids(self.members, ids)

    async def names(self, ids: Iterable[str]) -> dict[str, str]:
        found = await self.members_by_id(ids)
        return {k: v.get("display_name", "") for k, v in found.items()}

    async def audience(self, audience: Audience, batch: int) -> AsyncIterator[dict[str, Any]]:
        """Active members in a campaign's audience who consented to marketing.

        Inherently O(audience): every member in it gets the message. Read region by region
        through (status, consent.marketing, region), so members of other regions and those
        without consent are never read; roles (an array, which nx-27017 cannot match through
        an index) and the level are checked on the rows found. No regions means everyone:
        the same index, on its first two fields.
        """
        base: dict[str, Any] = {"status": "active", "consent.marketing": True}
        minimum = level_rank(audience.min_level)
        if minimum > 0:
            base["level_rank"] = {"$gte": minimum}
        roles = set(audience.roles)
        regions: list[str | None] = list(dict.fromkeys(audience.regions)) or [None]
        for region in regions:
            query = where(base) if region is None else where(base, region=region)
            async for doc in self.members.find(query, batch_size=batch):
                if roles and not roles.intersection(doc.get("roles") or ()):
                    continue
                yield doc

    def coordinators(self, region: str, batch: int) -> AsyncIterator[dict[str, Any]]:
        """Active coordinators of a region, through the scalar `coordinator_region` (O(them))."""
        return self.members.find(
            where(coordinator_region=region, status="active"), batch_size=batch
        )

    async def set_preferences(self, member_id: str, preferences: dict[str, Any]) -> bool:
        result = await self.members.update_one(
            where({"_id": member_id, "status": "active"}), {"$set": {"preferences": preferences}}
        )
        return result.matched_count == 1

    async def block_channel(self, member_id: str, channel: str, at: datetime) -> None:
        await self.members.update_one(
            {"_id": member_id}, {"$set": {f"blocked.{channel}": epoch_ms(at)}}
        )

    # -- campaigns (names for milestone and winner messages) ------------------------------------

    async def remember_campaign(self, campaign_id: str, name: str) -> None:
        await self.remember_campaigns({campaign_id: name})

    async def remember_campaigns(self, names: dict[str, str]) -> None:
        """Campaign names (campaign id -> name) in one round trip, by primary key."""
        if names:
            await self.campaigns.bulk_write(
                [
                    UpdateOne({"_id": cid}, {"$set": {"name": name}}, upsert=True)
                    for cid, name in names.items()
                ],
                ordered=False,
            )

    async def campaign_names(self, ids: Iterable[str]) -> dict[str, str]:
        found = await by_ids(self.campaigns, (i for i in ids if i), {"name": 1})
        return {k: v.get("name", "") for k, v in found.items()}

    # -- budgets and rate windows: counters guarded by the message that spends them -------------

    async def spend(
        self, collection: str, entries: list[tuple[str, str, str]], limit: int, expires_at: datetime
    ) -> set[int]:
        """Spend one unit per (key, member_id, message key) if the key's window is below `limit`.

        Returns the indexes of entries allowed. One bulk write (docs/patterns.md, section 2): an
        entry already spent by the same message (a redelivery) stays allowed; a window at its
        limit refuses. Both show as a duplicate key, told apart by reading those windows.
        """
        coll = self.budgets if collection == "budgets" else self.rates
        if not entries:
            return set()
        ops = [
            UpdateOne(
                where(
                    {"_id": key, "count": {"$lt": limit}, f"spent.{message}": {"$exists": False}}
                ),
                {
                    "$inc": {"count": 1},
                    "$set": {f"spent.{message}": 1},
                    "$setOnInsert": {"member_id": member_id, "expires_at": expires_at},
                },
                upsert=True,
            )
            for key, member_id, message in entries
        ]
        try:
            await coll.bulk_write(ops, ordered=False)
            return set(range(len(entries)))
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            refused = _failed_indexes(exc)
        windows = await by_ids(coll, {entries[i][0] for i in refused})
        already = {
            i
            for i in refused
            if entries[i][2] in (windows.get(entries[i][0], {}).get("spent") or {})
        }
        return (set(range(len(entries))) - refused) | already

    # -- deliveries -----------------------------------------------------------------------------

    async def insert_deliveries(self, docs: list[dict[str, Any]]) -> list[str]:
        """Insert deliveries with deterministic ids in one round trip; returns the new ids."""
        if not docs:
            return []
        # Computed here for every insert, so a copied document (a fallback) gets its own.
        docs = [{**d, "order_key": delivery_order_key(d)} for d in docs]
        try:
            await self.deliveries.insert_many(docs, ordered=False)
            return [d["_id"] for d in docs]
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            dup = _failed_indexes(exc)
            return [d["_id"] for i, d in enumerate(docs) if i not in dup]

    async def add_to_digests(
        self, entries: list[tuple[dict[str, Any], str, dict[str, Any]]]
    ) -> set[int]:
        """Add items to waiting digest deliveries (created on first use) in one round trip.

        entries: (the digest delivery as it is created, item key, item). Returns the indexes
        whose digest was already claimed or sent: the caller moves those to the next day.
        """
        if not entries:
            return set()
        ops = [
            UpdateOne(
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
        try:
            await self.deliveries.bulk_write(ops, ordered=False)
            return set()
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            return _failed_indexes(exc)

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta, token: str
    ) -> list[dict[str, Any]]:
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

        async def candidates(status: str) -> list[dict[str, Any]]:
            found = self.deliveries.find(where(status=status, **due), {"_id": 1, "due_ms": 1})
            return await found.sort("due_ms", ASCENDING).limit(limit).to_list(None)

        per_status = await asyncio.gather(*(candidates(s) for s in CLAIMABLE))
        tagged = [
            [(d["due_ms"], d["_id"], status) for d in docs]
            for status, docs in zip(CLAIMABLE, per_status, strict=True)
        ]
        chosen = list(heapq.merge(*tagged))[:limit]
        if not chosen:
            return []
        # One update per id (the primary key), not update_many over `_id $in`: with a long
        # queue the server may walk the (status, due_ms) range instead of the ids.
        await self.deliveries.bulk_write(
            [
                UpdateOne(
                    where({"_id": delivery_id, "status": status, **due}),
                    {
                        "$set": {
                            "status": "sending",
                            "claim": token,
                            "due_ms": now_ms + int(lease.total_seconds() * 1000),
                        }
                    },
                )
                for _, delivery_id, status in chosen
            ],
            ordered=False,
        )
        return await self.deliveries.find(where(claim=token)).to_list(None)

    async def finish(self, delivery_id: str, token: str, update: dict[str, Any]) -> bool:
        """Record the outcome of an attempt, if this worker still holds the claim."""
        update = {k: dict(v) for k, v in update.items()}
        update.setdefault("$unset", {})["claim"] = ""
        result = await self.deliveries.update_one(
            where({"_id": delivery_id, "claim": token}), update
        )
        return result.modified_count == 1

    async def inbox(self, member_id: str, limit: int, after: str | None) -> list[dict[str, Any]]:
        return await self.log({"member_id": member_id, "channel": "inapp"}, limit, after)

    async def log(
        self, filters: dict[str, Any], limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        """Newest first, strictly after the cursor's order key: O(page) through the index that
        ends in order_key (the key is unique, so deliveries sharing an instant are not lost)."""
        query = where(filters, order_key={"$lt": after} if after is not None else ANY_KEY)
        cursor = self.deliveries.find(query, {"outbox": 0, "items": 0})
        return await cursor.sort(NEWEST_FIRST).limit(limit).to_list(None)


def budget_key(member_id: str, day: date) -> str:
    return f"{member_id}:{day.isoformat()}"
