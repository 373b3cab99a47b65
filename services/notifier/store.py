"""The notifier's MongoDB collections: its projection of members, and deliveries."""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.store import is_duplicate_key, only_duplicates


class NotifierStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]
        self.deliveries = db["deliveries"]

    async def ensure_indexes(self) -> None:
        await self.deliveries.create_index([("member_id", 1), ("channel", 1), ("created_at", DESCENDING)])
        await self.deliveries.create_index([("status", 1), ("created_at", DESCENDING)])

    async def member(self, member_id: str) -> dict[str, Any] | None:
        return await self.members.find_one({"_id": member_id})

    async def insert_deliveries(self, docs: list[dict[str, Any]]) -> int:
        """Insert deliveries with deterministic ids; returns how many were new."""
        if not docs:
            return 0
        try:
            result = await self.deliveries.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            return int(exc.details.get("nInserted", 0))
        except Exception as exc:
            if is_duplicate_key(exc):
                return 0
            raise

    async def inbox(self, member_id: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"member_id": member_id, "channel": "inapp"}
        if before is not None:
            query["created_at"] = {"$lt": before}
        cursor = self.deliveries.find(query, {"outbox": 0}).sort("created_at", DESCENDING)
        return await cursor.limit(limit).to_list(None)

    async def erase_member(self, member_id: str) -> None:
        """The projection keeps only an anonymous tombstone; the member's messages go."""
        await self.deliveries.delete_many({"member_id": member_id})
