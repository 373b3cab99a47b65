"""The campaigns service's MongoDB collections."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


class CampaignsStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]

    async def ensure_indexes(self) -> None:
        await self.members.create_index([("region", 1), ("status", 1)])
