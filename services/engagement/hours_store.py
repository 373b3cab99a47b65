"""The engagement service's volunteer hours entries and the activities' titles they are labelled
with: reads, and the activities' notes made at once (the rest of the service's collections:
store.py). The use cases' writes of entries are staged by the unit of work's `uow.hours`
(repositories.py); the use case commits.

Mixed into `EngagementStore`, which holds the collections (`hours`, `activities`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from shared.documents import Doc
from shared.outbox_layout import without_outbox
from shared.query import by_ids, where
from shared.store import is_duplicate_key

HIDE = without_outbox()


class HoursRecords:
    hours: AsyncCollection[Doc]
    activities: AsyncCollection[Doc]

    async def hours_entry(self, entry_id: str) -> Doc | None:
        return await self.hours.find_one({"_id": entry_id}, HIDE)

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
