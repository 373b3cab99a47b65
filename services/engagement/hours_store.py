"""The engagement service's volunteer hours entries and the activities' titles they are labelled
with: reads and guarded writes (the rest of the service's collections: store.py). The use cases'
writes stage into their unit of work and return its step; the use case commits.

Mixed into `EngagementStore`, which holds the collections (`hours`, `activities`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.results import BulkWriteResult, UpdateResult

from shared.documents import Doc
from shared.events import CloudEvent
from shared.outbox_layout import without_outbox
from shared.query import by_ids, where
from shared.store import is_duplicate_key
from shared.uow import Step, UnitOfWork, Write

HIDE = without_outbox()


class HoursRecords:
    hours: AsyncCollection[Doc]
    activities: AsyncCollection[Doc]

    async def hours_entry(self, entry_id: str) -> Doc | None:
        return await self.hours.find_one({"_id": entry_id}, HIDE)

    def decide_hours(
        self, uow: UnitOfWork, entry_id: str, decision: Doc, events: list[CloudEvent]
    ) -> Step[UpdateResult]:
        """Stage pending → approved/rejected, once (the guard: this decision was made when the
        outcome's `modified_count` is 1); an approval carries hours-approved."""
        return uow.update(
            self.hours, where({"_id": entry_id, "status": "pending"}), {"$set": decision}, events
        )

    async def hours_of(
        self, member_id: str, status: str | None, limit: int, before: str | None
    ) -> list[Doc]:
        """Newest first, from before the sort key `before`."""
        query: Doc = {"member_id": member_id}
        if status:
            query["status"] = status
        query["order_key"] = {"$lt": before} if before else {"$gt": ""}
        found = self.hours.find(where(query), HIDE).sort("order_key", DESCENDING)
        return await found.limit(limit).to_list(None)

    async def hours_totals(self, member_id: str) -> dict[str, float]:
        pipeline: list[Doc] = [
            {"$match": where(member_id=member_id)},
            {"$group": {"_id": "$status", "hours": {"$sum": "$hours"}}},
        ]
        rows = await (await self.hours.aggregate(pipeline)).to_list(None)
        return {row["_id"]: float(row["hours"]) for row in rows}

    def insert_hours(
        self, uow: UnitOfWork, entries: list[tuple[Doc, CloudEvent]]
    ) -> Step[BulkWriteResult | None]:
        """Stage new entries with their events in one unordered bulk insert; an entry whose id
        exists already (the same cause again) is left as it is: the step's `refused` lists
        those (how many were inserted: `len(entries) - len(step.refused)`)."""
        writes = [Write.insert(doc, [event]) for doc, event in entries]
        return uow.bulk(self.hours, writes, skip_duplicates=True)

    async def activities_by_id(self, activity_ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.activities, activity_ids, {"title": 1, "timezone": 1})

    async def note_activity(
        self, activity_id: str, at_ms: int, title: str | None, timezone: str | None
    ) -> None:
        """An activity's title (the newest wins: guarded by its time, as two replicas may note
        two events of one activity at once) and time zone (it does not change)."""
        if title is not None:
            try:
                await self.activities.update_one(
                    where({"_id": activity_id, "title_ms": {"$lt": at_ms}}),
                    {"$set": {"title": title, "title_ms": at_ms}},
                    upsert=True,
                )
            except Exception as exc:
                if not is_duplicate_key(exc):  # a newer title is there already
                    raise
        if timezone is not None:
            await self.activities.update_one(
                {"_id": activity_id}, {"$set": {"timezone": timezone}}, upsert=True
            )
