"""The activities service's MongoDB collections, their indexes, the reads on them, and the
service's unit of work with the repositories that stage the writes.

- `activities`: an activity's definition (its shifts' definitions keyed by shift id) and the
  events about it (activity-published, -changed, -cancelled) in its outbox;
- `shifts`: one ledger per shift (domain.new_ledger): seats and waitlist, counters, check-in
  code; its writes are staged by its repository, `ledger_store.py`;
- `signups`: one document per member and shift (a sign-up, or the walk-in a check-in made),
  carrying the member's events (signed-up, sign-up-changed, attended, no-show); its writes are
  staged by its repository, `signup_store.py`;
- `members`: this service's projection of the members (status and display name);
- `checkin_links`: the coordinators' check-in links, by the SHA-256 of their token;
- `jobs`: leases of the periodic jobs.

Every filter on a field other than `_id` is built by `shared.query.where` (the indexed form on
both servers); which index serves which query is in docs/activities.md, "Queries and indexes".
Times that are compared or set by path are epoch milliseconds (`*_ms`).

Reads are `async`, on `ActivitiesStore`. Writes are staged by repositories, one per kind of
document (`ActivityRepository`, `LedgerRepository`, `SignupRepository`, `LinkRepository`,
`MemberRepository`), each given the store for its collections. The service's unit of work
owns them (`ActivitiesUnitOfWork`: a use case stages `uow.activities.insert(doc, events)`,
which returns the staged `Step`); nothing is written until the use case commits. Written at
once on the store instead: the members projection, which an event handler writes without
events, and an erasure's dropping of waiting events (`drop_pending_events`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.results import DeleteResult, UpdateResult

from services.activities.domain import LIVE
from services.activities.ledger_store import LEDGER_FIGURES, LedgerRepository
from services.activities.presence import FIGURES
from services.activities.signup_store import SignupRepository
from shared.documents import Doc
from shared.events import CloudEvent
from shared.http import requests_of
from shared.outbox_layout import drop_pending, without_outbox
from shared.outbox_port import Publisher
from shared.projection import MemberProjection
from shared.query import count, where
from shared.uow import Repository, Step, UnitOfWork

#: What the members projection keeps (shared/projection.py): the name shows on the check-in
#: page and the shift's list; nothing else is needed here.
PROJECTED_FIELDS = ("display_name",)
#: Lower than every listing key: the first page is a range on the key too.
FIRST_KEY = ""


class ActivitiesStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.activities = db["activities"]
        self.shifts = db["shifts"]
        self.signups = db["signups"]
        self.members = db["members"]
        self.links = db["checkin_links"]
        self.jobs = db["jobs"]
        #: The HTTP kernel's Idempotency-Key records (erasure deletes a member's).
        self.idempotency = db["idempotency_keys"]
        self.projection = MemberProjection(self.members, PROJECTED_FIELDS)

    async def ensure_indexes(self) -> None:
        a, s, u = self.activities, self.shifts, self.signups
        # The listing: one sort key (first start, then id), with and without its filters.
        await a.create_index("list_key")
        await a.create_index([("status", 1), ("list_key", 1)])
        await a.create_index([("region", 1), ("list_key", 1)])
        await a.create_index([("region", 1), ("status", 1), ("list_key", 1)])
        await a.create_index("sync_due_ms")
        await a.create_index("organiser_id")
        await s.create_index("activity_id")
        await s.create_index("code", unique=True)
        await s.create_index("due_ms")
        await s.create_index("unsettled_n")
        await s.create_index("sync_due_ms")
        await s.create_index([("status", 1), ("starts_ms", 1)])
        # One sign-up per member and shift (a repeat finds it).
        await u.create_index([("shift_id", 1), ("member_id", 1)], unique=True)
        await u.create_index([("member_id", 1), ("member_key", DESCENDING)])
        await u.create_index([("member_id", 1), ("live_end_ms", 1)])
        await u.create_index([("shift_id", 1), ("status", 1), ("ticket", 1)])
        await u.create_index([("shift_id", 1), ("member_key", 1)])
        await u.create_index([("shift_id", 1), ("att", 1)])
        await u.create_index("pending_ms")
        await u.create_index("uncounted_ms")
        await u.create_index("recorded_by")
        await self.links.create_index("activity_id")
        await self.links.create_index("recorded_by")

    # -- activities ------------------------------------------------------------------------------

    async def activity(self, activity_id: str) -> Doc | None:
        return await self.activities.find_one({"_id": activity_id}, without_outbox())

    async def list_activities(
        self,
        region: str | None,
        status: str | None,
        after: str | None,
        until: str | None,
        limit: int,
    ) -> list[Doc]:
        """By first start (then id), up to `limit`: one range on `list_key` behind the
        equalities, served by one of the listing indexes."""
        keys: Doc = {"$gt": after if after is not None else FIRST_KEY}
        if until is not None:
            keys["$lt"] = until
        query = where(list_key=keys)
        if region is not None:
            query = where(region=region, **query)
        if status is not None:
            query = where(status=status, **query)
        found = self.activities.find(query, without_outbox()).sort([("list_key", ASCENDING)])
        return await found.limit(limit).to_list(None)

    async def activities_between(self, status: str, first_key: str, last_key: str) -> int:
        return await count(
            self.activities, {"status": status, "list_key": {"$gte": first_key, "$lt": last_key}}
        )

    async def activities_by_id(self, ids: list[str], projection: Doc) -> dict[str, Doc]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        found = self.activities.find({"_id": {"$in": wanted}}, projection)
        return {d["_id"]: d async for d in found}

    async def unsynced_activities(self, before_ms: int, limit: int) -> list[str]:
        query = where(sync_due_ms={"$lte": before_ms})
        return [d["_id"] async for d in self.activities.find(query, {"_id": 1}).limit(limit)]

    # -- ledgers ---------------------------------------------------------------------------------

    async def ledger(self, shift_id: str, projection: Doc | None = None) -> Doc | None:
        return await self.shifts.find_one({"_id": shift_id}, projection)

    async def ledgers_of(self, activity_id: str, projection: Doc | None = None) -> list[Doc]:
        """The activity's shift ledgers (at most its shifts' number), without the rosters."""
        found = self.shifts.find(where(activity_id=activity_id), projection or LEDGER_FIGURES)
        return await found.to_list(None)

    async def ledger_by_code(self, code: str) -> Doc | None:
        return await self.shifts.find_one(where(code=code), LEDGER_FIGURES)

    async def due_ledgers(self, before_ms: int, limit: int) -> list[str]:
        query = where(due_ms={"$lte": before_ms})
        return [d["_id"] async for d in self.shifts.find(query, {"_id": 1}).limit(limit)]

    async def unsettled_ledgers(self, limit: int) -> list[str]:
        query = where(unsettled_n={"$gt": 0})
        return [d["_id"] async for d in self.shifts.find(query, {"_id": 1}).limit(limit)]

    async def unsynced_ledgers(self, before_ms: int, limit: int) -> list[Doc]:
        query = where(sync_due_ms={"$lte": before_ms})
        found = self.shifts.find(query, {"activity_id": 1}).limit(limit)
        return await found.to_list(None)

    async def ledger_totals(self, first_ms: int, last_ms: int) -> Doc:
        """The kept counters of the published shifts starting in [first, last), summed by the
        server over the (status, starts_ms) index: bounded by the window, not the history."""
        pipeline: list[Doc] = [
            {"$match": where(status="published", starts_ms={"$gte": first_ms, "$lt": last_ms})},
            {"$group": {"_id": None, **{f: {"$sum": f"${f}"} for f in FIGURES}}},
        ]
        rows = await (await self.shifts.aggregate(pipeline)).to_list(1)
        return rows[0] if rows else {}

    # -- sign-ups --------------------------------------------------------------------------------

    async def signup(self, signup_id: str) -> Doc | None:
        return await self.signups.find_one({"_id": signup_id}, without_outbox())

    async def signups_by_id(self, ids: list[str]) -> dict[str, Doc]:
        if not ids:
            return {}
        found = self.signups.find({"_id": {"$in": ids}}, without_outbox())
        return {d["_id"]: d async for d in found}

    async def signup_of(self, shift_id: str, member_id: str) -> Doc | None:
        return await self.signups.find_one(
            where(shift_id=shift_id, member_id=member_id), without_outbox()
        )

    async def live_signups_of(self, member_id: str, ending_after_ms: int) -> list[Doc]:
        """The member's sign-ups holding a place on a shift that ends after the given time:
        the candidates for an overlap (the member's upcoming shifts, not their history)."""
        query = where(member_id=member_id, live_end_ms={"$gt": ending_after_ms})
        fields = {"shift_id": 1, "status": 1, "starts_ms": 1, "ends_ms": 1, "created_ms": 1}
        return await self.signups.find(query, fields).to_list(None)

    async def signup_ids_of(self, member_id: str) -> list[str]:
        """The ids of every sign-up the member ever made (an erasure anonymises them all)."""
        found = self.signups.find(where(member_id=member_id), {"_id": 1})
        return [d["_id"] async for d in found]

    async def first_waitlisted(self, shift_id: str) -> Doc | None:
        query = where(shift_id=shift_id, status="waitlisted", ticket={"$gt": 0})
        found = self.signups.find(query, {"attempt": 1, "ticket": 1}).sort([("ticket", 1)])
        rows = await found.limit(1).to_list(None)
        return rows[0] if rows else None

    async def waitlist_position(self, shift_id: str, ticket: int) -> int:
        """1 + the waitlisted sign-ups of the shift ahead of this ticket (bounded by them)."""
        ahead = {"shift_id": shift_id, "status": "waitlisted", "ticket": {"$gt": 0, "$lt": ticket}}
        return 1 + await count(self.signups, ahead)

    async def present(self, shift_id: str) -> list[Doc]:
        """Members still checked in on the shift (the close job settles their hours)."""
        query = where(shift_id=shift_id, att="present")
        return await self.signups.find(query, without_outbox()).to_list(None)

    async def signups_of_shift(self, shift_id: str, after: str, limit: int) -> list[Doc]:
        query = where(shift_id=shift_id, member_key={"$gt": after})
        found = self.signups.find(query, without_outbox()).sort([("member_key", ASCENDING)])
        return await found.limit(limit).to_list(None)

    async def signups_of_member(self, member_id: str, before: str | None, limit: int) -> list[Doc]:
        keys = {"$lt": before} if before is not None else {"$gt": FIRST_KEY}
        query = where(member_id=member_id, member_key=keys)
        found = self.signups.find(query, without_outbox()).sort([("member_key", DESCENDING)])
        return await found.limit(limit).to_list(None)

    async def member_totals(self, member_id: str) -> Doc:
        """The member's attended shifts and hours, summed over their own sign-ups."""
        pipeline: list[Doc] = [
            {"$match": where(member_id=member_id, member_key={"$gt": FIRST_KEY})},
            {"$group": {"_id": None, "hours": {"$sum": "$hours"}, "n": {"$sum": "$attended_n"}}},
        ]
        rows = await (await self.signups.aggregate(pipeline)).to_list(1)
        return rows[0] if rows else {}

    async def stale_pending(self, before_ms: int, limit: int) -> list[Doc]:
        query = where(pending_ms={"$lte": before_ms})
        return await self.signups.find(query, without_outbox()).limit(limit).to_list(None)

    async def uncounted(self, before_ms: int, limit: int) -> list[Doc]:
        query = where(uncounted_ms={"$lte": before_ms})
        return await self.signups.find(query, without_outbox()).limit(limit).to_list(None)

    # -- members (projection) --------------------------------------------------------------------

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, ids: list[str]) -> dict[str, Doc]:
        if not ids:
            return {}
        found = self.members.find({"_id": {"$in": list(dict.fromkeys(ids))}})
        return {d["_id"]: d async for d in found}

    # -- check-in links --------------------------------------------------------------------------

    # -- erasure ---------------------------------------------------------------------------------

    async def drop_pending_events(self, signup_ids: list[str], types: Iterable[str]) -> None:
        """Drop the events of these `types` still waiting in these sign-ups (the kernel's
        `drop_pending`, written at once, each removal guarded): an erasure does it before it
        purges the stream, so none reaches the stream after the purge."""
        for event_type in types:
            await drop_pending(self.signups, signup_ids, event_type)


def live(status: str) -> bool:
    return status in LIVE


# -- the repositories the service's unit of work owns ------------------------------------------


class ActivityRepository(Repository):
    """The staged writes of the `activities` collection."""

    def __init__(self, uow: UnitOfWork, store: ActivitiesStore) -> None:
        super().__init__(uow)
        self.store = store

    def insert(self, activity: Doc, events: list[CloudEvent]) -> Step[None]:
        """Stage a new activity with its events (a duplicate key at commit: made before)."""
        return self.uow.insert(self.store.activities, activity, events)

    def change(
        self, activity_id: str, version: int, fields: Doc, events: list[CloudEvent]
    ) -> Step[Doc | None]:
        """Stage a change of the activity at `version`, with its events. Outcome: the activity
        after, None when another change came first."""
        guard = where({"_id": activity_id, "version": version})
        return self.uow.find_one_and_update(self.store.activities, guard, {"$set": fields}, events)

    def cancel(self, activity_id: str, status: str, fields: Doc, events: list[CloudEvent]) -> None:
        """Stage the cancel (`fields`) of the activity still in `status`, with its events."""
        guard = where({"_id": activity_id, "status": status})
        self.uow.update(
            self.store.activities, guard, {"$set": fields, "$inc": {"version": 1}}, events
        )

    def synced(self, activity_id: str, version: int) -> None:
        """Stage the end of a sync: the activity at `version` is due no more."""
        guard = where({"_id": activity_id, "version": version})
        self.uow.update(self.store.activities, guard, {"$unset": {"sync_due_ms": ""}})


class LinkRepository(Repository):
    """The staged writes of the `checkin_links` collection."""

    def __init__(self, uow: UnitOfWork, store: ActivitiesStore) -> None:
        super().__init__(uow)
        self.store = store

    def insert(self, link: Doc) -> None:
        self.uow.insert(self.store.links, link)

    def revoke(self, activity_id: str) -> Step[DeleteResult]:
        """Stage the delete of the activity's check-in links (a revoked link is deleted)."""
        return self.uow.delete(self.store.links, where(activity_id=activity_id))


class MemberRepository(Repository):
    """The staged writes about a member: the projection's first attendance, and an erasure's
    names kept in others' documents."""

    def __init__(self, uow: UnitOfWork, store: ActivitiesStore) -> None:
        super().__init__(uow)
        self.store = store

    def claim_first(self, signup: Doc) -> Step[UpdateResult]:
        """Stage the claim of the sign-up as its active member's first attendance ever
        (matched only while the member has none)."""
        guard = {"_id": signup["member_id"], "status": "active", "first_signup": {"$exists": False}}
        first = {"first_signup": signup["_id"], "first_activity": signup["activity_id"]}
        return self.uow.update(self.store.members, where(guard), {"$set": first})

    def erase_names(self, member_id: str, erased: str) -> None:
        """Stage the member's name replaced by `erased` where others' documents keep it: what
        they recorded as a coordinator (sign-ups, check-in links) and the activities they
        organised; and the delete of the Idempotency-Key records of requests about them
        (they keep the answers)."""
        for recorded in (self.store.signups, self.store.links):
            named = where(recorded_by=member_id)
            self.uow.update_many(recorded, named, {"$set": {"recorded_by": erased}})
        organised = where(organiser_id=member_id)
        self.uow.update_many(self.store.activities, organised, {"$set": {"organiser_id": erased}})
        self.uow.delete(self.store.idempotency, requests_of(member_id))


class ActivitiesUnitOfWork(UnitOfWork):
    """The activities service's unit of work: it owns one repository per kind of document, each
    staging its writes here (`uow.ledgers.claim_seat(...)`); the use case commits."""

    def __init__(self, relay: Publisher, store: ActivitiesStore) -> None:
        super().__init__(relay)
        self.activities: ActivityRepository = ActivityRepository(self, store)
        self.ledgers: LedgerRepository = LedgerRepository(self, store)
        self.signups: SignupRepository = SignupRepository(self, store)
        self.links: LinkRepository = LinkRepository(self, store)
        self.members: MemberRepository = MemberRepository(self, store)
