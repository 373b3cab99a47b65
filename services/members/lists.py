"""The member list and the referrals of a member: pages read in join order.

Every page is one indexed range on the sort key (`list_key`), the first page too, so a page
costs its own size, not the community's (docs/members.md, "Queries and indexes"). Filters on
roles and interests read the listing entries (`member_tags`, see listing.py) and check each
against its member.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from services.members import listing
from shared import query
from shared.clock import now_ms
from shared.documents import Doc
from shared.outbox_layout import without_outbox
from shared.query import Collection, where

#: Never shown to clients: the kernel's pending events, and the bookkeeping of erasure.
READABLE = without_outbox("idempotency_record")
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


class MemberLists:
    """Reads of the member list and of referrals (the store writes what they read)."""

    def __init__(self, members: Collection, tags: Collection) -> None:
        self.members = members
        self.tags = tags

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
        tags = listing.tags_for_filter(role, interest)
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
        return await self.members.find(flt, READABLE).sort(ORDER).limit(limit).to_list(None)

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
            members = await query.by_ids(self.members, [e["member_id"] for e in entries], READABLE)
            for entry in entries:
                member = members.get(entry["member_id"])
                if not listing.entry_holds(entry, member):
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
        cutoff = now_ms() - STALE_AFTER_MS
        await self.tags.delete_many(where({"_id": {"$in": entry_ids}}, written_ms={"$lt": cutoff}))

    async def count_referrals(self, referrer_id: str) -> int:
        # One referrer's referrals, counted over the (referred_by, list_key) index.
        return await query.count(self.members, {"referred_by": referrer_id})
