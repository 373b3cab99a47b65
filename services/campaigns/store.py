"""The campaigns service's MongoDB collections: campaigns, members, standings, activity facts.

Every time this service writes in an update (or compares in a query) is an integer of epoch
milliseconds (`*_ms`). nx-27017 difference: `$set`/`$max`/`$min` of a *date* by path stores
a string there, which range queries then miss; numbers behave as on MongoDB. Dates are
converted at the HTTP and event boundaries only (`domain.to_ms` / `domain.from_ms`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from services.campaigns.domain import Standing, crossed_milestones
from shared.events import CloudEvent
from shared.outbox import update_with_outbox, with_outbox
from shared.store import is_duplicate_key

Doc = dict[str, Any]
OPEN = ("scheduled", "active")  # statuses in which a campaign still accepts scoring events
NO_OUTBOX = {"outbox": 0}


def field_key(key: str) -> str:
    """A key safe as a MongoDB field name (no dots, no leading `$`)."""
    return key.replace(".", "_").replace("$", "_")


@dataclass(frozen=True)
class Credited:
    """The outcome of crediting points once: None from `credit` means already applied."""

    points: float
    milestones: list[int]
    events: list[CloudEvent]


MilestoneEvents = Callable[[list[int], float], list[CloudEvent]]


class CampaignsStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.campaigns = db["campaigns"]
        self.members = db["members"]
        self.standings = db["standings"]
        self.activity = db["activity"]
        self.jobs = db["jobs"]

    async def ensure_indexes(self) -> None:
        await self.members.create_index([("region", 1), ("status", 1)])
        await self.campaigns.create_index([("status", 1), ("window_start_ms", 1)])
        await self.campaigns.create_index([("status", 1), ("window_end_ms", 1)])
        await self.campaigns.create_index([("created_ms", DESCENDING)])
        await self.standings.create_index(
            [("campaign_id", 1), ("points", DESCENDING), ("reached_ms", ASCENDING)]
        )
        await self.activity.create_index([("campaign_id", 1), ("type", 1)])
        await self.activity.create_index([("referred_id", 1), ("type", 1)], sparse=True)

    # -- campaigns ------------------------------------------------------------------------------

    async def insert_campaign(self, doc: Doc) -> None:
        await self.campaigns.insert_one(doc)

    async def campaign(self, campaign_id: str) -> Doc | None:
        return await self.campaigns.find_one({"_id": campaign_id}, NO_OUTBOX)

    async def list_campaigns(
        self, status: str | None, limit: int, after: tuple[int, str] | None
    ) -> list[Doc]:
        """Newest first; `after` is the (created_ms, id) of the last item already seen."""
        query: Doc = {}
        if status:
            query["status"] = status
        if after is not None:
            created, cid = after
            query["$or"] = [
                {"created_ms": {"$lt": created}},
                {"created_ms": created, "_id": {"$lt": cid}},
            ]
        cursor = self.campaigns.find(query, NO_OUTBOX).sort([("created_ms", -1), ("_id", -1)])
        return await cursor.limit(limit).to_list(None)

    async def accepting(self, at_ms: int) -> list[Doc]:
        """Campaigns not ended nor cancelled whose window holds this instant."""
        query = {
            "status": {"$in": list(OPEN)},
            "window_start_ms": {"$lte": at_ms},
            "window_end_ms": {"$gt": at_ms},
        }
        return await self.campaigns.find(query, NO_OUTBOX).to_list(None)

    async def due_to_start(self, now_ms: int) -> list[str]:
        query = {"status": "scheduled", "window_start_ms": {"$lte": now_ms}}
        return [d["_id"] async for d in self.campaigns.find(query, {"_id": 1})]

    async def due_to_end(self, cutoff_ms: int) -> list[str]:
        query = {"status": "active", "window_end_ms": {"$lte": cutoff_ms}}
        return [d["_id"] async for d in self.campaigns.find(query, {"_id": 1})]

    async def transition(
        self, campaign_id: str, condition: Doc, changes: Doc, events: list[CloudEvent]
    ) -> Doc | None:
        """Apply `changes` only if the campaign still matches `condition`; exactly one caller
        wins, and its events ride in the same single-document update (the outbox)."""
        return await self.campaigns.find_one_and_update(
            {"_id": campaign_id, **condition},
            update_with_outbox({"$set": changes, "$inc": {"version": 1}}, events),
            projection=NO_OUTBOX,
            return_document=ReturnDocument.AFTER,
        )

    # -- members (this service's own projection) ------------------------------------------------

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, member_ids: list[str]) -> dict[str, Doc]:
        if not member_ids:
            return {}
        return {d["_id"]: d async for d in self.members.find({"_id": {"$in": member_ids}})}

    async def set_joined(self, member_id: str, joined_ms: int) -> None:
        await self.members.update_one(
            {"_id": member_id}, {"$set": {"joined_ms": joined_ms}}, upsert=True
        )

    async def touch(self, member_id: str, at_ms: int) -> None:
        """Remember the member's first and latest activity (for referrals and retention)."""
        await self.members.update_one(
            {"_id": member_id},
            {"$min": {"first_active_ms": at_ms}, "$max": {"last_active_ms": at_ms}},
            upsert=True,
        )

    async def set_level(self, member_id: str, level: str, at_ms: int) -> None:
        """Keep the newest level only: a late, older level-changed does not roll it back."""
        doc = await self.members.find_one({"_id": member_id}, {"level_ms": 1})
        if doc is not None and int(doc.get("level_ms") or 0) > at_ms:
            return
        await self.members.update_one(
            {"_id": member_id}, {"$set": {"level": level, "level_ms": at_ms}}, upsert=True
        )

    # -- activity facts (what happened inside a campaign, for the report) ------------------------

    async def record(self, fact: Doc) -> Doc | None:
        """Insert a fact with a deterministic id; returns the stored one if it was already there."""
        try:
            await self.activity.insert_one(fact)
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            return await self.activity.find_one({"_id": fact["_id"]})
        return None

    async def referrals_of(self, referred_id: str, campaign_ids: list[str]) -> list[Doc]:
        query = {
            "type": "referral-made",
            "referred_id": referred_id,
            "campaign_id": {"$in": campaign_ids},
        }
        return await self.activity.find(query).to_list(None)

    async def activity_totals(self, campaign_id: str) -> dict[str, Doc]:
        pipeline = [
            {"$match": {"campaign_id": campaign_id}},
            {"$group": {"_id": "$type", "count": {"$sum": 1}, "hours": {"$sum": "$hours"}}},
        ]
        cursor = await self.activity.aggregate(pipeline)
        return {d["_id"]: d async for d in cursor}

    async def referred_members(self, campaign_id: str) -> list[Doc]:
        query = {"campaign_id": campaign_id, "type": "referral-made"}
        return await self.activity.find(query, {"referred_id": 1, "at_ms": 1}).to_list(None)

    # -- standings: one document per (campaign, member) -----------------------------------------

    async def credit(
        self,
        campaign_id: str,
        member_id: str,
        key: str,
        points: float,
        at_ms: int,
        now_ms: int,
        milestones: list[int],
        milestone_events: MilestoneEvents,
    ) -> Credited | None:
        """Add points once per key (PATTERNS.md section 2) and, in the same update, mark each
        milestone crossed with its milestone-reached event: all or nothing, exactly once.

        Optimistic concurrency on `version`: a concurrent credit to the same member makes the
        update match nothing, and we re-read and try again.
        """
        sid = f"{campaign_id}:{member_id}"
        key = field_key(key)
        while True:
            doc = await self.standings.find_one({"_id": sid}, NO_OUTBOX)
            if doc is not None and key in (doc.get("applied") or {}):
                return None
            before = (
                Standing(member_id, float(doc["points"]), int(doc["reached_ms"]))
                if doc is not None
                else Standing(member_id)
            )
            after = before.credit(key, points, at_ms)
            done = [int(m) for m in ((doc or {}).get("milestones") or {})]
            crossed = crossed_milestones(milestones, before.points, after.points, done)
            events = milestone_events(crossed, after.points) if crossed else []
            if doc is None:
                new = {
                    "_id": sid,
                    "campaign_id": campaign_id,
                    "member_id": member_id,
                    "points": after.points,
                    "reached_ms": after.reached_ms,
                    "applied": {key: now_ms},
                    "milestones": {str(m): now_ms for m in crossed},
                    "version": 1,
                }
                try:
                    await self.standings.insert_one(with_outbox(new, events))
                except Exception as exc:
                    if is_duplicate_key(exc):
                        continue
                    raise
                return Credited(after.points, crossed, events)
            changes: Doc = {
                "points": after.points,
                "reached_ms": after.reached_ms,
                f"applied.{key}": now_ms,
            }
            changes.update({f"milestones.{m}": now_ms for m in crossed})
            result = await self.standings.update_one(
                {"_id": sid, "version": doc["version"]},
                update_with_outbox({"$set": changes, "$inc": {"version": 1}}, events),
            )
            if result.matched_count:
                return Credited(after.points, crossed, events)

    async def standings_of(self, campaign_id: str) -> list[Doc]:
        query = {"campaign_id": campaign_id, "points": {"$gt": 0}}
        fields = {"member_id": 1, "points": 1, "reached_ms": 1, "milestones": 1}
        return await self.standings.find(query, fields).to_list(None)

    async def leaderboard(self, campaign_id: str, offset: int, limit: int) -> tuple[list[Doc], int]:
        """A page of standings in `domain.ranked` order, and how many members have points."""
        query = {"campaign_id": campaign_id, "points": {"$gt": 0}}
        order = [("points", DESCENDING), ("reached_ms", ASCENDING), ("member_id", ASCENDING)]
        fields = {"member_id": 1, "points": 1, "reached_ms": 1, "milestones": 1}
        page = (
            await self.standings.find(query, fields)
            .sort(order)
            .skip(offset)
            .limit(limit)
            .to_list(None)
        )
        return page, await self.standings.count_documents(query)
