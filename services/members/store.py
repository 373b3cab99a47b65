"""The members service's MongoDB collections and queries.

Every filter goes through `shared.query.where` (the indexed form on both servers); which
index serves which query is in docs/members.md, "Queries and indexes".
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.members import domain
from services.members.domain import CONTACT_KINDS, list_key
from shared import query
from shared.events import CloudEvent
from shared.http import forget_requests_of
from shared.outbox import update_with_outbox, with_outbox
from shared.query import where
from shared.store import only_duplicates

Doc = dict[str, Any]

log = logging.getLogger("sarafan.members.store")

#: Never shown to clients: the outbox, and the bookkeeping of erasure.
HIDDEN = {"outbox": 0, "idempotency_record": 0}
#: Listing order, and the key of the pagination cursor: unique and never changing.
ORDER = [("list_key", 1)]
#: What a listing reads of a tag entry.
ENTRY_FIELDS = {"member_id": 1, "list_key": 1, "tag": 1, "status": 1, "region": 1, "written_ms": 1}
#: A tag entry that no longer matches its member is dropped only once it is this old: a
#: change writes its new entries before the member, and a reader must not take those away
#: while that write is on its way.
STALE_AFTER_MS = 60_000
#: The fewest tag entries a listing reads at once.
TAG_BATCH_MIN = 20
#: How many members the one-time backfill of tag entries reads at once.
BACKFILL_BATCH = 1000


class ContactTaken(Exception):
    """Another member already has this email, phone or telegram (HTTP 409)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CodeTaken(Exception):
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


class MemberStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.members = db["members"]
        # One small document per (tag, status, region) a member is listed under: the
        # role/interest filters of the member list (see domain.list_tags).
        self.tags = db["member_tags"]
        # One-time data migrations that have run (so a restart does not repeat them).
        self.migrations = db["migrations"]
        # The kernel's Idempotency-Key records (shared/http.py) hold the join response, which
        # has personal data: erasure deletes the member's records too.
        self.idempotency = db["idempotency_keys"]

    async def ensure_indexes(self) -> None:
        # One person joins once: each contact kind is unique among members that have it.
        # These also serve the look-up by contact ({kind: {$eq: v}}) of an import.
        for kind in CONTACT_KINDS:
            await self.members.create_index(
                kind,
                unique=True,
                name=f"{kind}_unique",
                partialFilterExpression={kind: {"$type": "string"}},
            )
        await self.members.create_index("referral_code", unique=True, name="code_unique")
        # A referrer's referrals in join order, and their count.
        await self.members.create_index([("referred_by", 1), ("list_key", 1)])
        # The listing order (join time, then id) is one unique field: nx-27017 cannot index a
        # compound key naming `_id`, and compares dates to the second only.
        await self._backfill_list_keys()  # first: a unique index refuses many missing keys
        await self.members.create_index("list_key", unique=True, name="list_key_unique")
        # The member list by status, and by status and region, in join order.
        await self.members.create_index([("status", 1), ("list_key", 1)])
        await self.members.create_index([("status", 1), ("region", 1), ("list_key", 1)])
        await self.members.create_index("purge", sparse=True)
        await self.members.create_index("idempotency_record", sparse=True)
        # The member list by role and/or interest (and region), in join order.
        await self.tags.create_index([("tag", 1), ("status", 1), ("list_key", 1)])
        await self.tags.create_index([("tag", 1), ("status", 1), ("region", 1), ("list_key", 1)])
        await self.tags.create_index("member_id")  # erasure removes every entry of a member
        await self._backfill_tags()

    # -- unique values -------------------------------------------------------------------------

    async def _which_unique(self, member: Doc, exc: DuplicateKeyError) -> Exception:
        # Which unique index refused the write: ask the data, not the server's message text,
        # whose wording differs between MongoDB and nx-27017.
        code = member.get("referral_code")
        if code:
            holder = await self.members.find_one(where(referral_code=code), {"_id": 1})
            if holder is not None and holder["_id"] != member["_id"]:
                return CodeTaken()
        for kind in CONTACT_KINDS:
            holder = await self.holder_of(kind, member.get(kind))
            if holder is not None and holder["_id"] != member["_id"]:
                return ContactTaken(kind)
        return exc

    async def holder_of(
        self, kind: str, value: str | None, projection: dict[str, Any] | None = None
    ) -> Doc | None:
        """The member who has this contact, if anyone (served by the contact's unique index)."""
        if not value:
            return None
        return await self.members.find_one(where({kind: value}), projection or {"_id": 1})

    # -- joining -------------------------------------------------------------------------------

    async def insert(self, member: Doc, events: list[CloudEvent]) -> None:
        """Insert a new member with their first events in the same write (the outbox).

        Their listing entries go first: a crash in between leaves entries without a member,
        which listings skip (and drop), never a member missing from a listing.
        """
        entries = list(domain.tag_entries(member).values())
        await self.add_entries(entries)
        try:
            await self.members.insert_one(with_outbox(member, events))
        except DuplicateKeyError as exc:
            refused = await self._which_unique(member, exc)
            if not isinstance(refused, CodeTaken):  # a new code keeps the same entries
                await self.remove_entries(e["_id"] for e in entries)
            raise refused from exc

    async def insert_many(self, members: list[Doc]) -> list[int]:
        """Insert new members (outbox included) in one unordered write; the positions of
        those refused by a unique index (the caller finds out which). Other errors raise."""
        if not members:
            return []
        try:
            await self.members.insert_many(members, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            return sorted(int(e["index"]) for e in exc.details.get("writeErrors", []))
        return []

    async def add_entries(self, entries: list[Doc]) -> None:
        """Listing entries of new members (ids never used before; a repeat is a duplicate)."""
        if not entries:
            return
        stamped = [{**e, "written_ms": _now_ms()} for e in entries]
        try:
            await self.tags.insert_many(stamped, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise

    async def remove_entries(self, entry_ids: Iterable[str]) -> None:
        ids = list(entry_ids)
        if ids:
            await self.tags.delete_many({"_id": {"$in": ids}})

    async def forget_entries(self, member_id: str) -> None:
        """Every listing entry of a member (they hold the region): at erasure."""
        await self.tags.delete_many(where(member_id=member_id))

    # -- reading -------------------------------------------------------------------------------

    async def get(self, member_id: str) -> Doc | None:
        """A member (active or left); None when unknown or erased."""
        doc = await self.members.find_one({"_id": member_id}, HIDDEN)
        return None if doc is None or doc.get("status") == "erased" else doc

    async def get_with_outbox(self, member_id: str) -> Doc | None:
        """The whole document, tombstones included (for leaving and erasure)."""
        return await self.members.find_one({"_id": member_id})

    async def by_idempotency_record(self, record: str) -> Doc | None:
        """The active member a join with this Idempotency-Key record created, if any."""
        # Only the record's own index: the status is checked on the one document it finds.
        doc = await self.members.find_one(where(idempotency_record=record), HIDDEN)
        return doc if doc is not None and doc.get("status") == "active" else None

    async def by_code(self, code: str) -> Doc | None:
        return await self.members.find_one(where(referral_code=code), HIDDEN)

    async def _backfill_list_keys(self) -> None:
        # Members stored before list_key existed (the first slice) get theirs once.
        missing = self.members.find(where(list_key={"$exists": False}))
        async for doc in missing:
            try:
                key = list_key(doc["joined_at"], doc["_id"])
            except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
                # One document without a usable join time must not stop the service starting;
                # it stays unlisted (the id only: the document may hold personal data).
                log.warning(
                    "member %s has no usable joined_at (%s): not listed",
                    doc["_id"],
                    type(exc).__name__,
                )
                continue
            await self.members.update_one({"_id": doc["_id"]}, {"$set": {"list_key": key}})
            await self.add_entries(list(domain.tag_entries({**doc, "list_key": key}).values()))

    async def _backfill_tags(self) -> None:
        # Members stored before the listing entries existed get theirs, once: a walk over the
        # whole collection in join order (at start-up only, never on a request).
        done = "member-tags"
        if await self.migrations.find_one({"_id": done}):
            return
        after = ""
        fields = {"status": 1, "region": 1, "roles": 1, "interests": 1, "list_key": 1}
        while True:
            batch = (
                await self.members.find(where(list_key={"$gt": after}), fields)
                .sort(ORDER)
                .limit(BACKFILL_BATCH)
                .to_list(None)
            )
            if not batch:
                break
            await self.add_entries([e for doc in batch for e in domain.tag_entries(doc).values()])
            after = batch[-1]["list_key"]
        try:
            await self.migrations.insert_one({"_id": done, "at_ms": _now_ms()})
        except DuplicateKeyError:
            pass  # another replica finished it too

    async def page(
        self,
        status: str,
        after: str | None,
        limit: int,
        region: str | None = None,
        role: str | None = None,
        interest: str | None = None,
    ) -> list[Doc]:
        """One page of the member list in join order, strictly after the cursor's member.

        The key is unique and never changes, so members who join while a client walks the
        pages only ever land after the cursor: everyone present at the start comes once.
        Every filter is one indexed range in join order, so a page costs its own size.
        """
        tags = domain.tags_for_filter(role, interest)
        if not tags:
            fields: dict[str, Any] = {"status": status}
            if region:
                fields["region"] = region
            return await self._members_page(fields, after, limit)
        streams = await asyncio.gather(
            *(self._tagged(tag, status, region, after, limit) for tag in tags)
        )
        if len(streams) == 1:
            return streams[0]
        # One tag per role: a member with two roles is in two streams; keep them once.
        merged: list[Doc] = []
        seen: set[str] = set()
        for doc in heapq.merge(*streams, key=lambda d: d["list_key"]):
            if doc["_id"] not in seen:
                seen.add(doc["_id"])
                merged.append(doc)
                if len(merged) == limit:
                    break
        return merged

    async def referrals_page(self, referrer_id: str, after: str | None, limit: int) -> list[Doc]:
        """Who joined with this member's code, in join order (tombstones included)."""
        return await self._members_page({"referred_by": referrer_id}, after, limit)

    async def _members_page(self, fields: Doc, after: str | None, limit: int) -> list[Doc]:
        # Always a range on the sort key, the first page too: the same index then serves the
        # equality prefix and the order.
        flt = where(fields, list_key={"$gt": after or ""})
        return await self.members.find(flt, HIDDEN).sort(ORDER).limit(limit).to_list(None)

    async def _tagged(
        self, tag: str, status: str, region: str | None, after: str | None, limit: int
    ) -> list[Doc]:
        """The first `limit` members listed under a tag after the cursor, each checked on
        their own document: an entry left over from an interrupted change is skipped (and
        dropped once it is old), so it costs a little work, never a wrong answer."""
        found: list[Doc] = []
        stale: list[str] = []
        cursor = after or ""
        fields: Doc = {"tag": tag, "status": status}
        if region:
            fields["region"] = region
        while len(found) < limit:
            # A few more than still needed, so a run of left-over entries costs few trips.
            want = max(limit - len(found), TAG_BATCH_MIN)
            entries = (
                await self.tags.find(where(fields, list_key={"$gt": cursor}), ENTRY_FIELDS)
                .sort(ORDER)
                .limit(want)
                .to_list(None)
            )
            members = await query.by_ids(self.members, [e["member_id"] for e in entries], HIDDEN)
            for entry in entries:
                member = members.get(entry["member_id"])
                if not domain.entry_holds(entry, member):
                    stale.append(entry["_id"])
                elif len(found) < limit:
                    found.append(member)  # type: ignore[arg-type]
            if len(entries) < want:
                break
            cursor = entries[-1]["list_key"]
        if stale:
            await self._drop_stale(stale)
        return found

    async def _drop_stale(self, entry_ids: list[str]) -> None:
        # Guarded by age: an entry rewritten since (a change in flight refreshes
        # `written_ms`) is kept.
        cutoff = _now_ms() - STALE_AFTER_MS
        await self.tags.delete_many(where({"_id": {"$in": entry_ids}}, written_ms={"$lt": cutoff}))

    async def count_referrals(self, referrer_id: str) -> int:
        # One referrer's referrals, counted over the (referred_by, list_key) index.
        return await query.count(self.members, {"referred_by": referrer_id})

    # -- changing ------------------------------------------------------------------------------

    async def update(
        self,
        member_id: str,
        version: int,
        change: Doc,
        events: list[CloudEvent],
        guard: Doc | None = None,
        current: Doc | None = None,
    ) -> bool:
        """Apply an update if nobody changed the member since `version` (optimistic).

        With `current` (the document the change was computed from), the listing entries
        follow: the new ones are written before the member, the old ones removed after.
        """
        before: dict[str, Doc] = {}
        after: dict[str, Doc] = {}
        if current is not None:
            before = domain.tag_entries(current)
            after = domain.tag_entries(_applied(current, change))
            await self._refresh_entries([e for i, e in after.items() if i not in before])
        update = update_with_outbox(change, events)
        update.setdefault("$inc", {})["version"] = 1
        flt = where({"_id": member_id, "version": version, **(guard or {})})
        try:
            result = await self.members.update_one(flt, update)
        except DuplicateKeyError as exc:
            raise await self._which_unique(
                {"_id": member_id, **change.get("$set", {})}, exc
            ) from exc
        written = result.matched_count == 1
        if written:
            await self.remove_entries(i for i in before if i not in after)
        return written

    async def _refresh_entries(self, entries: list[Doc]) -> None:
        # Upserts by id (not inserts): an entry left over from an earlier change gets a new
        # `written_ms`, so a reader that judged it stale a moment ago keeps it.
        if not entries:
            return
        now = _now_ms()
        await self.tags.bulk_write(
            [
                UpdateOne({"_id": e["_id"]}, {"$set": {**e, "written_ms": now}}, upsert=True)
                for e in entries
            ],
            ordered=False,
        )

    async def replace_with_tombstone(self, member: Doc, tomb: Doc) -> bool:
        """Swap the profile for its tombstone, unless it changed since it was read.

        The guard includes the outbox counter: the relay does not bump `version` when it
        removes a published entry, and the tombstone must not resurrect that entry.
        """
        guard: Doc = {"_id": member["_id"], "version": member.get("version", 1)}
        pending = member.get("outbox_pending")
        guard["outbox_pending"] = pending if pending is not None else {"$exists": False}
        result = await self.members.replace_one(where(guard), tomb)
        if result.matched_count == 1:
            # The eraser also does this until the erasure is finished (after a crash here).
            await self.forget_entries(member["_id"])
            if member.get("idempotency_record"):
                await self.idempotency.delete_one({"_id": member["idempotency_record"]})
            await self.forget_requests(member["_id"])
        return result.matched_count == 1

    async def forget_requests(self, member_id: str) -> None:
        """Every Idempotency-Key record of a request about the member (the kernel indexes
        them by the member the request or its response names): at erasure."""
        await forget_requests_of(self.idempotency, member_id)

    # -- erasure bookkeeping -------------------------------------------------------------------

    async def erasures_pending(self) -> list[str]:
        # `purge` is a phase name (a string) while an erasure is unfinished: a range on it is
        # served by its sparse index, where `$exists` would read every member.
        docs = self.members.find(where(purge={"$gt": ""}), {"_id": 1})
        return [doc["_id"] async for doc in docs]

    async def purge_phase(self, member_id: str) -> str | None:
        doc = await self.members.find_one({"_id": member_id}, {"purge": 1})
        return (doc or {}).get("purge")

    async def set_purge_phase(self, member_id: str, phase: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$set": {"purge": phase}})

    async def purge_done(self, member_id: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$unset": {"purge": ""}})

    async def unpublished_on_subjects_of(self, member_id: str) -> bool:
        """Is an event whose subject names this member still waiting in an outbox?

        Their own events ride in their document; referral-made (subject: the referrer) rides
        in the document of each member they referred.
        """
        own = await self.members.find_one(
            where({"_id": member_id}, outbox_pending={"$gt": 0}), {"_id": 1}
        )
        if own is not None:
            return True
        referred = self.members.find(
            where(referred_by=member_id, outbox_pending={"$gt": 0}), {"outbox": 1}
        )
        async for doc in referred:
            if any(e.get("subject") == member_id for e in (doc.get("outbox") or {}).values()):
                return True
        return False


def _applied(current: Doc, change: Doc) -> Doc:
    """The document as it will be after a `$set`/`$unset` of top-level fields."""
    after = {**current, **change.get("$set", {})}
    for name in change.get("$unset", {}):
        after.pop(name, None)
    return after
