"""A service's own copy of the member fields it needs, kept from the member-* events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.events import EventData, MemberJoined, MemberLeft, MemberUpdated
from shared.store import DUPLICATE_KEY, epoch_ms

Operation = UpdateOne | ReplaceOne


class MemberProjection:
    """Keeps `fields` of each member; forgets personal data on member-left with erase.

    Every change is one write keyed by the member's id, so a batch of member events is one
    ordered bulk write (`apply_many`): the events of one member keep their order.
    """

    def __init__(
        self, collection: AsyncCollection[dict[str, Any]], fields: tuple[str, ...]
    ) -> None:
        self.collection = collection
        self.fields = fields

    def operation(self, data: EventData) -> Operation | None:
        """The write that applies a member event; None for other events."""
        write = self._WRITES.get(type(data))
        return write(self, data) if write is not None else None

    def _joined(self, data: MemberJoined) -> Operation:
        doc = data.model_dump(mode="json", include=set(self.fields))
        # Never over an erased tombstone: a replayed member-joined must not bring the personal
        # data back. The guard pins `_id`; `$nin`, not `$ne`: with `$ne` an upsert over a
        # document lacking the field raises on nx-27017 (docs/patterns.md).
        # Times as epoch ms: a date `$set` by path is a string on nx-27017 (see epoch_ms).
        return UpdateOne(
            {"_id": data.member_id, "status": {"$nin": ["erased"]}},
            {"$set": {**doc, "status": "active", "joined_at_ms": epoch_ms(data.joined_at)}},
            upsert=True,
        )

    def _updated(self, data: MemberUpdated) -> Operation | None:
        changes = {k: v for k, v in data.changes.items() if k in self.fields}
        if not changes:
            return None
        return UpdateOne({"_id": data.member_id, "status": {"$nin": ["erased"]}}, {"$set": changes})

    def _left(self, data: MemberLeft) -> Operation:
        if data.erase:
            # Erased: no personal data stays; the id remains so that counts stay right.
            return ReplaceOne(
                {"_id": data.member_id},
                {"status": "erased", "left_at_ms": epoch_ms(data.left_at)},
                upsert=True,
            )
        return UpdateOne(
            {"_id": data.member_id, "status": {"$nin": ["erased"]}},
            {"$set": {"status": "left", "left_at_ms": epoch_ms(data.left_at)}},
        )

    #: The write of each member event type.
    _WRITES: ClassVar[dict[type[EventData], Callable[[Any, Any], Operation | None]]] = {
        MemberJoined: _joined,
        MemberUpdated: _updated,
        MemberLeft: _left,
    }

    async def apply(self, data: EventData) -> bool:
        """Apply one member event; True when it was one."""
        op = self.operation(data)
        if op is None:
            return type(data) in self._WRITES
        await self.apply_many([data])
        return True

    async def apply_many(self, events: Iterable[EventData]) -> None:
        """Apply member events in their order with one bulk write (others are skipped)."""
        ops = [op for data in events if (op := self.operation(data)) is not None]
        await write_in_order(self.collection, ops)

    async def get(self, member_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": member_id})


async def write_in_order(collection: AsyncCollection[dict[str, Any]], ops: Sequence[Any]) -> None:
    """An ordered bulk write that steps over duplicate-key refusals.

    A guarded upsert that meets an erased tombstone fails with a duplicate key: that write
    is meant not to happen, and the ones after it still must.
    """
    start = 0
    while start < len(ops):
        try:
            await collection.bulk_write(list(ops[start:]), ordered=True)
            return
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or errors[0].get("code") != DUPLICATE_KEY:
                raise
            start += int(errors[0]["index"]) + 1
