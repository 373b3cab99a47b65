"""A service's own copy of the member fields it needs, kept from the member-* events."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared.events import EventData, MemberJoined, MemberLeft, MemberUpdated
from shared.store import epoch_ms, is_duplicate_key


class MemberProjection:
    """Keeps `fields` of each member; forgets personal data on member-left with erase."""

    def __init__(
        self, collection: AsyncCollection[dict[str, Any]], fields: tuple[str, ...]
    ) -> None:
        self.collection = collection
        self.fields = fields

    async def apply(self, data: EventData) -> bool:
        """Apply a member event; True when it was one."""
        if isinstance(data, MemberJoined):
            doc = data.model_dump(mode="json", include=set(self.fields))
            # Times as epoch ms: a date `$set` by path is a string on nx-27017 (see epoch_ms).
            try:
                # Never over an erased tombstone: a replayed member-joined must not bring the
                # personal data back (`$nin`, not `$ne`: nx-27017's update filters need it).
                await self.collection.update_one(
                    {"_id": data.member_id, "status": {"$nin": ["erased"]}},
                    {"$set": {**doc, "status": "active", "joined_at_ms": epoch_ms(data.joined_at)}},
                    upsert=True,
                )
            except Exception as exc:
                if not is_duplicate_key(exc):  # the tombstone's id: nothing to do
                    raise
        elif isinstance(data, MemberUpdated):
            changes = {k: v for k, v in data.changes.items() if k in self.fields}
            if changes:
                await self.collection.update_one({"_id": data.member_id}, {"$set": changes})
        elif isinstance(data, MemberLeft):
            if data.erase:
                # Erased: no personal data stays; the id remains so that counts stay right.
                await self.collection.replace_one(
                    {"_id": data.member_id},
                    {"status": "erased", "left_at_ms": epoch_ms(data.left_at)},
                    upsert=True,
                )
            else:
                await self.collection.update_one(
                    {"_id": data.member_id},
                    {"$set": {"status": "left", "left_at_ms": epoch_ms(data.left_at)}},
                )
        else:
            return False
        return True

    async def get(self, member_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": member_id})
