"""The campaigns service's MongoDB collections: campaigns, members, standings, activity facts.

Every time this service writes in an update (or compares in a query) is an integer of epoch
milliseconds (`*_ms`). nx-27017 difference: `$set`/`$max`/`$min` of a *date* by path stores
a string there, which range queries then miss; numbers behave as on MongoDB. Dates are
converted at the HTTP and event boundaries only (`shared.clock.epoch_ms` / `from_ms`).

The store reads and writes documents and nothing else: what a write changes is decided by the
use cases (`services.campaigns.usecases`). The writes that carry events (a new campaign, a
transition, the standings) are not made here: the service's unit of work owns the repositories
that stage them (`services.campaigns.repositories`: `uow.campaigns`, `uow.standings`), given
this store for its collections; the use case commits them (and reads a write's outcome when
its next move depends on it). Reads, and the writes that carry no event, are made at once.

Every filter on a field other than `_id` is built by `shared.query.where` (equality as `$eq`,
no `$in`/`$or` on secondary fields), so both servers answer it from an index; which index
serves which query is in docs/campaigns.md, "Queries and indexes".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.documents import Doc
from shared.outbox_layout import without_outbox
from shared.query import by_ids, count, descending_number, order_key, where
from shared.store import DUPLICATE_KEY, TRANSIENT_DB_ERRORS

log = logging.getLogger("sarafan.campaigns")

OPEN = ("scheduled", "active")  # statuses in which a campaign still accepts scoring events
STANDING_FIELDS = {"member_id": 1, "points": 1, "reached_ms": 1, "milestones": 1}
HIDDEN = without_outbox("draw_secret")  # a draw's secret: read by the end alone
#: `_id`s per `$in` read: far below any server's limit on bound parameters.
IDS_PER_READ = 1000
#: Lower than every rank key and order key: "the whole listing" as a range on the key, so
#: the first page is served by the same index as the next ones.
FIRST_KEY = ""


def field_key(key: str) -> str:
    """A key safe as a MongoDB field name (no dots, no leading `$`)."""
    return key.replace(".", "_").replace("$", "_")


def rank_key(member_id: str, points: float, reached_ms: int) -> str:
    """One string per standing that sorts in leaderboard order (`domain.ranked`): points
    descending, then who reached them first, then member id. A leaderboard page is then one
    range on one indexed field, and so is "members with at least P points"
    (`rank_key < at_least(P)`)."""
    return f"{descending_number(points)}:{order_key(reached_ms, member_id)}"


def at_least(points: float) -> str:
    """The rank keys below this one are exactly those of standings with `points` or more
    (`;` sorts right after the `:` that ends the points part of a rank key)."""
    return f"{descending_number(points)};"


def standing_id(campaign_id: str, member_id: str) -> str:
    """One standing per (campaign, member)."""
    return f"{campaign_id}:{member_id}"


def _rank_key_of(doc: Doc) -> str:
    return rank_key(doc["member_id"], float(doc["points"]), int(doc["reached_ms"]))


def _chunks(items: Sequence[Any], size: int = IDS_PER_READ) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class CampaignsStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.campaigns = db["campaigns"]
        self.members = db["members"]
        self.standings = db["standings"]
        self.activity = db["activity"]
        self.jobs = db["jobs"]
        #: The HTTP kernel's Idempotency-Key records (erasure deletes a member's).
        self.idempotency = db["idempotency_keys"]

    async def ensure_indexes(self) -> None:
        await self.members.create_index([("region", 1), ("status", 1)])
        # The scheduler and the scoring: `$eq` on the status, a range on the window's edge.
        await self.campaigns.create_index([("status", 1), ("window_start_ms", 1)])
        await self.campaigns.create_index([("status", 1), ("window_end_ms", 1)])
        # The listing, newest first, with and without a status (and the backfill below).
        await self.campaigns.create_index([("order_key", DESCENDING)])
        await self.campaigns.create_index([("status", 1), ("order_key", DESCENDING)])
        # Leaderboard pages and the report's figures: the rank key after the campaign, and
        # the points beside it so that their sum is read from the index alone.
        await self.standings.create_index(
            [("campaign_id", 1), ("rank_key", ASCENDING), ("points", ASCENDING)]
        )
        # The report's counts per type and hours, from the index alone.
        await self.activity.create_index([("campaign_id", 1), ("type", 1), ("hours", 1)])
        await self.backfill_keys()

    async def backfill_keys(self) -> None:
        """Give campaigns stored before the sort keys existed their `order_key`, and their
        standings their `rank_key`. The campaign's key is written last, so a crash midway
        leaves the campaign to be done again at the next start; once done this is one
        indexed read that finds nothing."""
        missing = await self.campaigns.find(
            where(order_key={"$exists": False}), {"created_ms": 1}
        ).to_list(None)
        for campaign in missing:
            try:
                await self._backfill(campaign)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as exc:
                # One campaign that cannot be keyed (a broken document) must not keep the
                # service from starting: it stays out of the listing, the others get keys.
                log.error(
                    "campaign %s: sort keys not backfilled (%s)",
                    str(campaign.get("_id"))[:100],
                    type(exc).__name__,
                )

    async def _backfill(self, campaign: Doc) -> None:
        cid = campaign["_id"]
        unranked = await self.standings.find(
            where(campaign_id=cid, rank_key={"$exists": False}),
            {"member_id": 1, "points": 1, "reached_ms": 1, "version": 1},
        ).to_list(None)
        ops = []
        for doc in unranked:
            try:
                if float(doc.get("points") or 0) > 0:
                    # Guarded by version: a credit meanwhile wrote its own rank key.
                    ops.append(
                        UpdateOne(
                            where({"_id": doc["_id"], "version": doc["version"]}),
                            {"$set": {"rank_key": _rank_key_of(doc)}},
                        )
                    )
            except (KeyError, TypeError, ValueError) as exc:
                log.error(
                    "standing %s: rank key not backfilled (%s)",
                    str(doc.get("_id"))[:100],
                    type(exc).__name__,
                )
        for chunk in _chunks(ops):
            await self.standings.bulk_write(list(chunk), ordered=False)
        await self.campaigns.update_one(
            {"_id": cid},
            {"$set": {"order_key": order_key(int(campaign.get("created_ms") or 0), cid)}},
        )
        log.info("campaign %s: sort keys backfilled", cid)

    # -- campaigns ------------------------------------------------------------------------------

    async def campaign(self, campaign_id: str, *, secret: bool = False) -> Doc | None:
        """The campaign; with its draw's secret (`draw_secret`) only when `secret` (the end)."""
        return await self.campaigns.find_one(
            {"_id": campaign_id}, without_outbox() if secret else HIDDEN
        )

    async def list_campaigns(self, status: str | None, limit: int, after: str | None) -> list[Doc]:
        """Newest first, up to `limit`; `after` is the `order_key` of the last item seen.

        One range on one key (`order_key` is the creation time, then the id), so the first
        page and the next ones are served by the (order_key) or (status, order_key) index.
        """
        query = where(order_key={"$lt": after} if after is not None else {"$gt": FIRST_KEY})
        if status:
            query = where(status=status, **query)
        cursor = self.campaigns.find(query, HIDDEN).sort([("order_key", DESCENDING)])
        return await cursor.limit(limit).to_list(None)

    async def open_between(self, first_ms: int, last_ms: int) -> list[Doc]:
        """Campaigns not ended nor cancelled whose window holds some instant of
        [first_ms, last_ms]: one indexed `$eq` query per open status (not `$in`).

        Their number is the campaigns running at once, whatever the size of the community;
        the caller checks each activity's own time against each window.
        """

        async def open_as(status: str) -> list[Doc]:
            query = where(
                status=status, window_start_ms={"$lte": last_ms}, window_end_ms={"$gt": first_ms}
            )
            return await self.campaigns.find(query, HIDDEN).to_list(None)

        found = await asyncio.gather(*(open_as(status) for status in OPEN))
        return [doc for docs in found for doc in docs]

    async def due_to_start(self, now_ms: int) -> list[str]:
        query = where(status="scheduled", window_start_ms={"$lte": now_ms})
        return [d["_id"] async for d in self.campaigns.find(query, {"_id": 1})]

    async def due_to_end(self, cutoff_ms: int) -> list[str]:
        query = where(status="active", window_end_ms={"$lte": cutoff_ms})
        return [d["_id"] async for d in self.campaigns.find(query, {"_id": 1})]

    # -- members (this service's own projection) ------------------------------------------------

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(
        self, member_ids: Iterable[str], projection: Doc | None = None
    ) -> dict[str, Doc]:
        ids = list(dict.fromkeys(member_ids))
        found = await asyncio.gather(
            *(by_ids(self.members, chunk, projection) for chunk in _chunks(ids))
        )
        return {k: v for part in found for k, v in part.items()}

    async def touch_many(self, activity: Sequence[tuple[str, int]]) -> None:
        """Remember members' first and latest activity (for referrals and retention): one
        unordered bulk write for a batch (`$min`/`$max` commute)."""
        ops = [
            UpdateOne(
                {"_id": member_id},
                {"$min": {"first_active_ms": at_ms}, "$max": {"last_active_ms": at_ms}},
                upsert=True,
            )
            for member_id, at_ms in activity
        ]
        for _ in range(3):
            if not ops:
                return
            try:
                await self.members.bulk_write(ops, ordered=False)
                return
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                # Two upserts of one new member raced: the one that lost now finds the
                # document and updates it.
                ops = [ops[int(e["index"])] for e in errors]
        raise RuntimeError("touch of members kept racing with their creation")

    async def set_level(self, member_id: str, level: str, at_ms: int) -> None:
        """Keep the newest level only: a late, older level-changed does not roll it back."""
        doc = await self.members.find_one({"_id": member_id}, {"level_ms": 1})
        if doc is not None and int(doc.get("level_ms") or 0) > at_ms:
            return
        await self.members.update_one(
            {"_id": member_id}, {"$set": {"level": level, "level_ms": at_ms}}, upsert=True
        )

    # -- activity facts (what happened inside a campaign, for the report) ------------------------

    async def record_many(self, facts: Sequence[Doc]) -> dict[str, Doc]:
        """Insert facts with deterministic ids in one unordered write; returns, by id, the
        facts that were already stored (a duplicate key means recorded before).

        Facts with the same id in `facts` count as recorded by the first of them, as if
        they had been inserted one after the other.
        """
        first: dict[str, Doc] = {}
        for fact in facts:
            first.setdefault(fact["_id"], fact)
        stored: dict[str, Doc] = {}
        if first:
            try:
                await self.activity.insert_many(list(first.values()), ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                existing = [list(first.values())[int(e["index"])]["_id"] for e in errors]
                stored = await by_ids(self.activity, existing)
        # A later fact with the id of an earlier one met what the earlier one left stored.
        for fact in facts:
            if fact is not first[fact["_id"]]:
                stored.setdefault(fact["_id"], first[fact["_id"]])
        return stored

    async def facts_by_id(self, fact_ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.activity, fact_ids)

    async def activity_totals(self, campaign_id: str) -> dict[str, Doc]:
        """Facts per type and their hours: counted in SQL over the (campaign_id, type, hours)
        index; bounded by the one campaign."""
        pipeline = [
            {"$match": where(campaign_id=campaign_id)},
            {"$group": {"_id": "$type", "count": {"$sum": 1}, "hours": {"$sum": "$hours"}}},
        ]
        cursor = await self.activity.aggregate(pipeline)
        return {d["_id"]: d async for d in cursor}

    async def referred_members(self, campaign_id: str) -> list[Doc]:
        """Every referral credited in the campaign (the report judges each one's retention):
        as many as the campaign brought, read through the (campaign_id, type) index."""
        query = where(campaign_id=campaign_id, type="referral-made")
        return await self.activity.find(query, {"referred_id": 1, "at_ms": 1}).to_list(None)

    # -- standings: one document per (campaign, member) -----------------------------------------

    async def standings_by_id(self, ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.standings, ids, without_outbox())

    async def standings_of(self, campaign_id: str) -> list[Doc]:
        """Every standing with points in the campaign: as many as it has participants (ending
        a campaign needs them all for its winners and its draw)."""
        query = where(campaign_id=campaign_id, rank_key={"$gt": FIRST_KEY})
        return await self.standings.find(query, STANDING_FIELDS).to_list(None)

    async def leaderboard(
        self, campaign_id: str, offset: int, limit: int
    ) -> tuple[list[Doc], bool]:
        """A page of standings in `domain.ranked` order, and whether more follow.

        The (campaign_id, rank_key) index serves the filter and the order; the offset is
        stepped over inside that index (keys only, no document is read for it) and one more
        row than the page says whether another page follows, so no count is needed.
        """
        query = where(campaign_id=campaign_id, rank_key={"$gt": FIRST_KEY})
        rows = (
            await self.standings.find(query, STANDING_FIELDS)
            .sort([("rank_key", ASCENDING)])
            .skip(offset)
            .limit(limit + 1)
            .to_list(None)
        )
        return rows[:limit], len(rows) > limit

    async def standing_figures(
        self, campaign_id: str, milestones: Sequence[int]
    ) -> tuple[int, float, int]:
        """Participants, their points and the milestones they reached, counted and summed in
        SQL over the (campaign_id, rank_key, points) index, bounded by the one campaign.

        A standing has reached milestone M exactly when it has M points or more (points only
        grow, and the write that passes M marks it), so milestones reached is, per
        milestone, a count of a range of rank keys.
        """
        everyone = where(campaign_id=campaign_id, rank_key={"$gt": FIRST_KEY})
        pipeline: list[Doc] = [
            {"$match": everyone},
            {"$group": {"_id": None, "n": {"$sum": 1}, "points": {"$sum": "$points"}}},
        ]

        async def totals() -> tuple[int, float]:
            rows = await (await self.standings.aggregate(pipeline)).to_list(1)
            return (int(rows[0]["n"]), float(rows[0]["points"] or 0)) if rows else (0, 0.0)

        async def reached(milestone: int) -> int:
            keys = {"$gt": FIRST_KEY, "$lt": at_least(milestone)}
            return await count(self.standings, {"campaign_id": campaign_id, "rank_key": keys})

        (participants, points), *per_milestone = await asyncio.gather(
            totals(), *(reached(int(m)) for m in milestones)
        )
        return participants, points, sum(per_milestone)
