"""The notifier's projections of activities and sign-ups, and its planned reminders (part of
`NotifierStore`).

`activities` (by activity id: title, place, time zone, lead times, shifts keyed by shift id),
`signups` (by sign-up id: member, activity, shift, status) and `reminders` (one per sign-up,
lead time and shift start, with the `due_ms` the periodic job reads by range). Every filter on
a field other than `_id` goes through `shared.query.where()`; each query's index is listed in
docs/notifier.md, "Queries and indexes". Nothing here reads a whole collection: a shift's
sign-ups, an activity's sign-ups and the due reminders are each one indexed range, so the cost
never grows with the number of activities stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from pymongo import ASCENDING, UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.documents import Doc
from shared.query import Collection, by_ids, where
from shared.store import only_duplicates

#: A cancelled activity is never brought back by a late activity-published (`$nin`, not `$ne`,
#: in an upsert filter: docs/patterns.md, write-filter traps).
NOT_CANCELLED = {"status": {"$nin": ["cancelled"]}}
#: A reminder sent stays sent, whatever re-planning comes later.
NOT_SENT = {"status": {"$nin": ["sent"]}}


async def _bulk(coll: Collection, ops: list[Any]) -> set[int]:
    """One unordered bulk write; a duplicate key (a guard that refused an upsert) is expected.
    Returns the indexes refused."""
    if not ops:
        return set()
    try:
        await coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        if not only_duplicates(exc):
            raise
        return {int(e["index"]) for e in exc.details.get("writeErrors", [])}
    return set()


def _not_after(fields: Doc) -> str:
    """The guard on the stored sign-up's event time: strictly older for a signed-up."""
    return "$lt" if fields.get("event_type") == "signed-up" else "$lte"


class ActivityRecords:
    """The reads and writes of `activities`, `signups` and `reminders`."""

    activities: Collection
    signups: Collection
    reminders: Collection

    def init_activity_records(self, db: AsyncDatabase[Doc]) -> None:
        self.activities = db["activities"]
        self.signups = db["signups"]
        self.reminders = db["reminders"]

    async def ensure_activity_indexes(self) -> None:
        s, r = self.signups, self.reminders
        # Everyone signed up for an activity (by status); the confirmed of a shift.
        await s.create_index([("activity_id", ASCENDING), ("status", ASCENDING)])
        await s.create_index([("shift_id", ASCENDING), ("status", ASCENDING)])
        await s.create_index("member_id")
        # The periodic job: one range of planned reminders by due time.
        await r.create_index([("status", ASCENDING), ("due_ms", ASCENDING)])
        await r.create_index([("signup_id", ASCENDING), ("status", ASCENDING)])
        await r.create_index(
            [("shift_id", ASCENDING), ("status", ASCENDING), ("starts_ms", ASCENDING)]
        )
        await r.create_index([("activity_id", ASCENDING), ("status", ASCENDING)])
        await r.create_index("member_id")

    # -- activities ---------------------------------------------------------------------------

    async def project_activity(self, activity_id: str, fields: Doc) -> None:
        """The published activity, unless it was cancelled or changed by a later event
        meanwhile (a late copy of activity-published does not undo a change, even one made
        in the same millisecond; the same event again writes what is there)."""
        newer = {"event_ms": {"$lt": fields["event_ms"]}}
        await _bulk(
            self.activities,
            [
                UpdateOne(
                    where({"_id": activity_id, **NOT_CANCELLED, **newer}),
                    {"$set": fields},
                    upsert=True,
                )
            ],
        )

    async def change_activity(self, activity_id: str, fields: Doc, event_ms: int) -> bool:
        """The changed fields, unless the activity was cancelled or changed by a later event;
        False when nothing was written."""
        result = await self.activities.update_one(
            where({"_id": activity_id, **NOT_CANCELLED, "event_ms": {"$lte": event_ms}}),
            {"$set": {**fields, "event_ms": event_ms}},
        )
        return result.matched_count == 1

    async def cancel_activity(self, activity_id: str, reason: str, event_ms: int) -> None:
        """Cancelled for good (a tombstone if it was never seen published)."""
        await self.activities.update_one(
            {"_id": activity_id},
            {"$set": {"status": "cancelled", "reason": reason, "cancelled_ms": event_ms}},
            upsert=True,
        )

    async def activity(self, activity_id: str) -> Doc | None:
        return await self.activities.find_one({"_id": activity_id})

    async def activities_by_id(self, ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.activities, ids)

    # -- sign-ups -----------------------------------------------------------------------------

    async def project_signups(self, signups: dict[str, Doc]) -> None:
        """Each sign-up's state (sign-up id -> fields) in one round trip, unless the stored one
        came from a later event (a redelivery of an older one changes nothing). A sign-up's
        changes always follow its signed-up, so in the same millisecond a signed-up never
        replaces what a change set (two changes in one millisecond keep the later written)."""
        await _bulk(
            self.signups,
            [
                UpdateOne(
                    where({"_id": sid, "event_ms": {_not_after(fields): fields["event_ms"]}}),
                    {"$set": fields},
                    upsert=True,
                )
                for sid, fields in signups.items()
            ],
        )

    async def signups_by_id(self, ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.signups, ids)

    async def signups_of(
        self, field: str, value: str, status: str, batch: int
    ) -> AsyncIterator[list[Doc]]:
        """The sign-ups of an activity or a shift (`field`: activity_id, shift_id) with one
        status, in batches: one indexed range, O(those sign-ups)."""
        chunk: list[Doc] = []
        async for doc in self.signups.find(
            where({field: value, "status": status}), batch_size=batch
        ):
            chunk.append(doc)
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def forget_signups_of(self, member_id: str) -> None:
        """Erasure: the member's sign-ups and reminders go."""
        await self.signups.delete_many(where(member_id=member_id))
        await self.reminders.delete_many(where(member_id=member_id))

    # -- reminders ----------------------------------------------------------------------------

    async def plan_reminders(self, docs: list[Doc]) -> None:
        """Planned reminders in one round trip, by their deterministic ids: a new one is
        inserted, one planned or cancelled before gets its (new) due time, one sent stays as it
        is (its upsert meets the guard: a duplicate key, expected)."""
        await _bulk(
            self.reminders,
            [
                UpdateOne(
                    where({"_id": d["_id"], **NOT_SENT}),
                    {
                        "$set": {"status": "planned", "due_ms": d["due_ms"]},
                        "$setOnInsert": {
                            k: v for k, v in d.items() if k not in ("_id", "status", "due_ms")
                        },
                    },
                    upsert=True,
                )
                for d in docs
            ],
        )

    async def cancel_reminders_of_signups(self, signup_ids: Iterable[str]) -> None:
        """The planned reminders of sign-ups no longer confirmed: one indexed update each, in
        one round trip."""
        await _bulk(
            self.reminders,
            [
                UpdateMany(
                    where(signup_id=sid, status="planned"), {"$set": {"status": "cancelled"}}
                )
                for sid in dict.fromkeys(signup_ids)
            ],
        )

    async def cancel_moved_reminders(self, shift_id: str, starts_ms: int) -> None:
        """The planned reminders of a shift planned for another start than `starts_ms` (two
        ranges: before and after it, since `$ne` would read them all)."""
        for other in ({"$lt": starts_ms}, {"$gt": starts_ms}):
            await self.reminders.update_many(
                where(shift_id=shift_id, status="planned", starts_ms=other),
                {"$set": {"status": "cancelled"}},
            )

    async def cancel_reminders_of_activity(self, activity_id: str, lead: int | None = None) -> None:
        """The planned reminders of an activity (of one lead time only, when given)."""
        flt: Doc = {"activity_id": activity_id, "status": "planned"}
        if lead is not None:
            flt["lead_minutes"] = lead
        await self.reminders.update_many(where(flt), {"$set": {"status": "cancelled"}})

    async def due_reminders(self, now_ms: int, limit: int) -> list[Doc]:
        """Planned reminders due by now, earliest first: one range of (status, due_ms)."""
        found = self.reminders.find(where(status="planned", due_ms={"$lte": now_ms}))
        return await found.sort("due_ms", ASCENDING).limit(limit).to_list(None)

    async def close_reminders(self, outcomes: dict[str, str], at_ms: int) -> None:
        """Each handled reminder's outcome (sent, cancelled, dropped), if still planned."""
        await _bulk(
            self.reminders,
            [
                UpdateOne(
                    where({"_id": rid, "status": "planned"}),
                    {"$set": {"status": outcome, "closed_ms": at_ms}},
                )
                for rid, outcome in outcomes.items()
            ],
        )
