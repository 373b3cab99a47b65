"""The notifier's MongoDB collections: members projection, deliveries (the work queue), budgets.

Times that change after the insert (`due_ms`, `delivered_ms`, ...) are integer epoch
milliseconds: nx-27017 stores a date `$set` by path as a string, which range queries then
miss (tests/integration/test_mongo_conformance.py); numbers behave alike on both servers.
Dates written once, in the insert (`created_at`), stay dates for reading; sorting and
cursors use `created_ms`, because nx-27017 also compares dates only to the second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.notifier.domain import level_rank
from shared.events import Audience
from shared.store import epoch_ms, is_duplicate_key, only_duplicates

#: Deliveries a worker may claim: waiting ones, and sending ones whose worker's lease ran out.
CLAIMABLE = ["pending", "deferred", "sending"]
PROJECTION_FIELDS = ("display_name", "region", "roles", "locale", "timezone")


def _duplicates_only(exc: BaseException) -> bool:
    if isinstance(exc, BulkWriteError):
        return only_duplicates(exc)
    return is_duplicate_key(exc)


def _failed_indexes(exc: BulkWriteError) -> set[int]:
    return {int(e["index"]) for e in exc.details.get("writeErrors", [])}


class NotifierStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]
        self.deliveries = db["deliveries"]
        self.campaigns = db["campaigns"]
        self.budgets = db["budgets"]
        self.rates = db["rate_windows"]

    async def ensure_indexes(self) -> None:
        d = self.deliveries
        await d.create_index([("member_id", ASCENDING), ("created_ms", DESCENDING)])
        await d.create_index(
            [("member_id", ASCENDING), ("channel", ASCENDING), ("created_ms", DESCENDING)]
        )
        await d.create_index([("status", ASCENDING), ("due_ms", ASCENDING)])
        await d.create_index([("status", ASCENDING), ("created_ms", DESCENDING)])
        await d.create_index("claim", sparse=True)
        await d.create_index([("cause_event_id", ASCENDING), ("channel", ASCENDING)])
        m = self.members
        await m.create_index([("status", ASCENDING), ("region", ASCENDING)])
        await m.create_index([("status", ASCENDING), ("roles", ASCENDING)])
        for coll in (self.budgets, self.rates):
            await coll.create_index("member_id")
            await coll.create_index("expires_at", expireAfterSeconds=0)

    # -- the members projection -----------------------------------------------------------------

    async def project_joined(self, joined: list[dict[str, Any]]) -> None:
        """Upsert joined members in one round trip; an erased member is never brought back."""
        ops = [
            UpdateOne(
                {"_id": m["member_id"], "status": {"$ne": "erased"}},
                {
                    "$set": {
                        **{k: m[k] for k in PROJECTION_FIELDS},
                        # Whole subdocuments: booleans stay booleans on nx-27017.
                        "contacts": m["contacts"],
                        "consent": m["consent"],
                        "status": "active",
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
        await self.members.update_one({"_id": member_id}, body)

    async def project_level(self, member_id: str, level: str) -> None:
        try:
            await self.members.update_one(
                {"_id": member_id, "status": {"$ne": "erased"}},
                {"$set": {"level": level, "level_rank": level_rank(level)}},
                upsert=True,
            )
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise

    async def member_left(self, member_id: str, left_at: datetime) -> None:
        await self.members.update_one(
            {"_id": member_id, "status": {"$ne": "erased"}},
            {"$set": {"status": "left", "left_ms": epoch_ms(left_at)}},
        )
        await self.deliveries.update_many(
            {"member_id": member_id, "status": {"$in": CLAIMABLE}},
            {"$set": {"status": "cancelled", "last_error": "member left"}, "$unset": {"claim": ""}},
        )

    async def erase_member(self, member_id: str, left_at: datetime) -> None:
        """Forget the member: only an anonymous tombstone stays, and every message goes."""
        await self.members.replace_one(
            {"_id": member_id}, {"status": "erased", "left_ms": epoch_ms(left_at)}, upsert=True
        )
        await self.deliveries.delete_many({"member_id": member_id})
        await self.budgets.delete_many({"member_id": member_id})
        await self.rates.delete_many({"member_id": member_id})

    async def member(self, member_id: str) -> dict[str, Any] | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        return {d["_id"]: d async for d in self.members.find({"_id": {"$in": wanted}})}

    async def names(self, ids: Iterable[str]) -> dict[str, str]:
        found = await self.members_by_id(ids)
        return {k: v.get("display_name", "") for k, v in found.items()}

    def audience(self, audience: Audience, batch: int) -> AsyncIterator[dict[str, Any]]:
        """Active members in a campaign's audience who consented to marketing."""
        query: dict[str, Any] = {"status": "active", "consent.marketing": True}
        if audience.regions:
            query["region"] = {"$in": audience.regions}
        if audience.roles:
            query["roles"] = {"$in": audience.roles}
        if level_rank(audience.min_level) > 0:
            query["level_rank"] = {"$gte": level_rank(audience.min_level)}
        return self.members.find(query, batch_size=batch)

    def coordinators(self, region: str, batch: int) -> AsyncIterator[dict[str, Any]]:
        # `{"roles": "coordinator"}` (equality with an array element) finds nothing in a
        # nx-27017 `find` although MongoDB matches it; `$in` matches on both servers.
        return self.members.find(
            {"status": "active", "region": region, "roles": {"$in": ["coordinator"]}},
            batch_size=batch,
        )

    async def set_preferences(self, member_id: str, preferences: dict[str, Any]) -> bool:
        result = await self.members.update_one(
            {"_id": member_id, "status": "active"}, {"$set": {"preferences": preferences}}
        )
        return result.matched_count == 1

    async def block_channel(self, member_id: str, channel: str, at: datetime) -> None:
        await self.members.update_one(
            {"_id": member_id}, {"$set": {f"blocked.{channel}": epoch_ms(at)}}
        )

    # -- campaigns (names for milestone and winner messages) ------------------------------------

    async def remember_campaign(self, campaign_id: str, name: str) -> None:
        await self.campaigns.update_one({"_id": campaign_id}, {"$set": {"name": name}}, upsert=True)

    async def campaign_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = [i for i in ids if i]
        if not wanted:
            return {}
        return {
            d["_id"]: d.get("name", "") async for d in self.campaigns.find({"_id": {"$in": wanted}})
        }

    # -- budgets and rate windows: counters guarded by the message that spends them -------------

    async def spend(
        self, collection: str, entries: list[tuple[str, str, str]], limit: int, expires_at: datetime
    ) -> set[int]:
        """Spend one unit per (key, member_id, message key) if the key's window is below `limit`.

        Returns the indexes of entries allowed. One bulk write (PATTERNS.md section 2): an
        entry already spent by the same message (a redelivery) stays allowed; a window at its
        limit refuses. Both show as a duplicate key, told apart by reading those windows.
        """
        coll = self.budgets if collection == "budgets" else self.rates
        if not entries:
            return set()
        ops = [
            UpdateOne(
                {"_id": key, "count": {"$lt": limit}, f"spent.{message}": {"$exists": False}},
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
        keys = list({entries[i][0] for i in refused})
        windows = {d["_id"]: d async for d in coll.find({"_id": {"$in": keys}})}
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
                {"_id": doc["_id"], "status": "deferred"},
                # The filter's equalities (_id, status) seed the new document by themselves.
                {
                    "$set": {f"items.{key}": item},
                    "$setOnInsert": {k: v for k, v in doc.items() if k not in ("_id", "status")},
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

        Three round trips for the whole batch: find candidates, one conditional update_many
        (each document's update is atomic, so a document another worker claimed in between no
        longer matches), then read back what carries our token. The lease moves `due_ms`
        forward: a worker that dies mid-send leaves the delivery due again when it ends.
        """
        now_ms = epoch_ms(now)
        due = {"status": {"$in": CLAIMABLE}, "due_ms": {"$lte": now_ms}}
        ids = [
            d["_id"]
            async for d in self.deliveries.find(due, {"_id": 1}).sort("due_ms", 1).limit(limit)
        ]
        if not ids:
            return []
        await self.deliveries.update_many(
            {"_id": {"$in": ids}, **due},
            {
                "$set": {
                    "status": "sending",
                    "claim": token,
                    "due_ms": now_ms + int(lease.total_seconds() * 1000),
                }
            },
        )
        return await self.deliveries.find({"claim": token, "_id": {"$in": ids}}).to_list(None)

    async def finish(self, delivery_id: str, token: str, update: dict[str, Any]) -> bool:
        """Record the outcome of an attempt, if this worker still holds the claim."""
        update = {k: dict(v) for k, v in update.items()}
        update.setdefault("$unset", {})["claim"] = ""
        result = await self.deliveries.update_one({"_id": delivery_id, "claim": token}, update)
        return result.modified_count == 1

    async def inbox(
        self, member_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[dict[str, Any]]:
        return await self.log({"member_id": member_id, "channel": "inapp"}, limit, after)

    async def log(
        self, query: dict[str, Any], limit: int, after: tuple[int, str] | None
    ) -> list[dict[str, Any]]:
        """Newest first; the cursor is (created_ms, id) because a fan-out shares one instant."""
        if after is not None:
            at, last_id = after
            query = {
                **query,
                "$or": [{"created_ms": {"$lt": at}}, {"created_ms": at, "_id": {"$lt": last_id}}],
            }
        cursor = self.deliveries.find(query, {"outbox": 0, "items": 0})
        return (
            await cursor.sort([("created_ms", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .to_list(None)
        )


def budget_key(member_id: str, day: date) -> str:
    return f"{member_id}:{day.isoformat()}"
