"""The members service's MongoDB collections and queries."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import CloudEvent
from shared.outbox import with_outbox


class EmailTaken(Exception):
    pass


class CodeTaken(Exception):
    pass


class MemberStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]

    async def ensure_indexes(self) -> None:
        await self.members.create_index(
            "email", unique=True, name="email_unique",
            partialFilterExpression={"email": {"$type": "string"}},
        )
        await self.members.create_index("referral_code", unique=True, name="code_unique")
        await self.members.create_index("referred_by")
        # nx-27017 difference: a compound index naming `_id` makes every insert fail
        # ("JSON path error near '_id'"), so listings by region use a plain region index.
        await self.members.create_index("region")

    async def insert(self, member: dict[str, Any], events: list[CloudEvent]) -> None:
        """Insert a new member with their first events in the same write (the outbox)."""
        try:
            await self.members.insert_one(with_outbox(member, events))
        except DuplicateKeyError as exc:
            # Which unique index refused it: ask the data, not the server's message text,
            # whose wording differs between MongoDB and nx-27017.
            if await self.members.find_one({"referral_code": member["referral_code"]}, {"_id": 1}):
                raise CodeTaken from exc
            raise EmailTaken from exc

    async def get(self, member_id: str) -> dict[str, Any] | None:
        return await self.members.find_one({"_id": member_id}, {"outbox": 0})

    async def by_code(self, code: str) -> dict[str, Any] | None:
        return await self.members.find_one({"referral_code": code}, {"outbox": 0})

    async def referred_by(self, member_id: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self.members.find({"referred_by": member_id}, {"outbox": 0}).sort("joined_at", 1)
        return await cursor.limit(limit).to_list(None)
