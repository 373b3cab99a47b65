"""The notifier's MongoDB collections: the members projection, campaign names, budgets and
rate windows here; deliveries (the inbox, the log, the work queue) in `delivery_store`.

Stores only read and write: what a member event changes is decided in `projection.py`, what
an attempt changes in `deliveries.py`. The writes made in a use case's unit of work (deliveries,
outcomes, digest items, a dead address's mark) are not made by the store: the service's unit of
work (`NotifierUnitOfWork`, below) owns the repositories that stage them (`uow.deliveries`,
`uow.members`), given the store for its collections; each is returned as a step and the use
case commits it. The projection's writes, the budgets and the rate windows are made at once.
Every filter on a field other than `_id` goes through `shared.query.where()`: nx-27017 serves
only the `$eq`/range form from an index (docs/patterns.md, "Queries that stay fast"). Times
that a query compares are epoch ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from pymongo.results import UpdateResult

from services.notifier.activity_store import ActivityRecords
from services.notifier.delivery_store import (
    DeliveriesRepository,
    DeliveryRecords,
    failed_indexes,
    fill_in,
)
from services.notifier.domain import Audience, level_rank
from services.notifier.projection import InterestChange, MemberChange, coordinator_region
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.http import forget_requests_of
from shared.outbox_port import Publisher
from shared.query import by_ids, setting, where
from shared.store import only_duplicates
from shared.uow import Repository, Step, UnitOfWork

#: Guards a projection write against an erased tombstone. `$nin`, not `$ne`: an upsert whose
#: filter has `$ne` raises a duplicate key on nx-27017 over a document lacking the field (a
#: member first seen through level-changed), where MongoDB updates it.
NOT_ERASED = {"status": {"$nin": ["erased"]}}


def budget_key(member_id: str, day: date) -> str:
    return f"{member_id}:{day.isoformat()}"


async def _upsert_each(coll: Any, ops: list[UpdateOne]) -> set[int]:
    """One unordered bulk write of guarded upserts; a duplicate key is an erased tombstone,
    which stays as it is. Returns the indexes of those refused."""
    if not ops:
        return set()
    try:
        await coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        if not only_duplicates(exc):
            raise
        return failed_indexes(exc)
    return set()


def _consenting(doc: Doc, roles: set[str], minimum: int) -> bool:
    """An active member who consented to marketing, with one of `roles` (any when empty) and
    at least the level ranked `minimum` (read as truthy: nx-27017 may hold a boolean as 0/1)."""
    return (
        doc.get("status") == "active"
        and bool((doc.get("consent") or {}).get("marketing"))
        and (not roles or bool(roles.intersection(doc.get("roles") or ())))
        and int(doc.get("level_rank") or 0) >= minimum
    )


class NotifierStore(DeliveryRecords, ActivityRecords):
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.members = db["members"]
        self.interests = db["member_interests"]  # one entry per member and interest
        self.deliveries = db["deliveries"]
        self.campaigns = db["campaigns"]
        self.budgets = db["budgets"]
        self.rates = db["rate_windows"]
        self.idempotency = db["idempotency_keys"]  # the kernel's, kept per request
        self.jobs = db["jobs"]  # leases of the periodic jobs (shared/jobs.py)
        self.init_activity_records(db)

    async def ensure_indexes(self) -> None:
        await self.ensure_delivery_indexes()
        m = self.members
        # A campaign audience: consenting active members, region by region.
        await m.create_index(
            [("status", ASCENDING), ("consent.marketing", ASCENDING), ("region", ASCENDING)]
        )
        await m.create_index([("coordinator_region", ASCENDING), ("status", ASCENDING)])
        # An activity's audience by interest (and region); a member's entries by member.
        await self.interests.create_index([("interest", ASCENDING), ("region", ASCENDING)])
        await self.interests.create_index("member_id")
        await self.ensure_activity_indexes()
        for coll in (self.budgets, self.rates):
            await coll.create_index("member_id")
            await coll.create_index("expires_at", expireAfterSeconds=0)
        # Active members projected before coordinator_region existed get it once (found
        # through its index: a missing field is an index lookup).
        await fill_in(
            m,
            where(status="active", coordinator_region={"$exists": False}),
            {"roles": 1, "region": 1},
            lambda doc: {
                "coordinator_region": coordinator_region(doc.get("roles"), doc.get("region"))
            },
        )

    # -- the members projection -----------------------------------------------------------------

    async def project_joined(self, joined: dict[str, Doc], interests: dict[str, list[Doc]]) -> None:
        """Upsert joined members (member id -> fields) and their interest entries (member id ->
        entries), one round trip each; an erased member is never brought back. A document made
        earlier by level-changed is completed."""
        ids = list(joined)
        refused = await _upsert_each(
            self.members,
            [
                UpdateOne(where({"_id": mid, **NOT_ERASED}), {"$set": joined[mid]}, upsert=True)
                for mid in ids
            ],
        )
        erased = {ids[i] for i in refused}
        await self.write_interests(
            InterestChange([e for m, es in interests.items() if m not in erased for e in es], [])
        )

    async def write_interests(self, change: InterestChange) -> None:
        """A member's interest entries written and removed by id, in one round trip."""
        ops: list[Any] = [
            UpdateOne(
                {"_id": e["_id"]}, {"$set": {k: v for k, v in e.items() if k != "_id"}}, upsert=True
            )
            for e in change.write
        ]
        ops += [DeleteOne({"_id": entry_id}) for entry_id in change.remove]
        if ops:
            await self.interests.bulk_write(ops, ordered=False)

    async def update_member(self, member_id: str, change: MemberChange) -> None:
        # Guarded: an erasure that lands between the caller's read and this write wins.
        update = setting(change.set, change.unset)
        await self.members.update_one(where({"_id": member_id, **NOT_ERASED}), update)

    async def project_levels(self, levels: dict[str, str]) -> None:
        """Each member's level in one round trip (member id -> level).

        One write per member: the caller keeps the last level of a batch, so the writes may
        run in any order. A member not projected yet gets a document that member-joined
        completes later; an erased tombstone stays as it is (its duplicate key is ignored).
        """
        await _upsert_each(
            self.members,
            [
                UpdateOne(
                    where({"_id": member_id, **NOT_ERASED}),
                    {"$set": {"level": level, "level_rank": level_rank(level)}},
                    upsert=True,
                )
                for member_id, level in levels.items()
            ],
        )

    async def member_left(self, member_id: str, left_at: datetime) -> None:
        await self.members.update_one(
            where({"_id": member_id, **NOT_ERASED}),
            {"$set": {"status": "left", "left_ms": epoch_ms(left_at)}},
        )

    async def erase_member(self, member_id: str, left_at: datetime) -> None:
        """Forget the member: only an anonymous tombstone stays, and every message goes.

        Other members' messages that named this one keep only the id (`mentions`) and render
        the name from the projection when read, so the tombstone unnames them all at once
        (texts.py); nothing here grows with how often the member was mentioned.
        """
        await self.members.replace_one(
            {"_id": member_id}, {"status": "erased", "left_ms": epoch_ms(left_at)}, upsert=True
        )
        mine = where(member_id=member_id)
        await self.deliveries.delete_many(mine)
        await self.budgets.delete_many(mine)
        await self.rates.delete_many(mine)
        await self.interests.delete_many(mine)
        await self.forget_signups_of(member_id)
        # The Idempotency-Key records of requests about the member keep whole responses.
        await forget_requests_of(self.idempotency, member_id)

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.members, ids)

    async def names(self, ids: Iterable[str]) -> dict[str, str]:
        found = await self.members_by_id(ids)
        return {k: v.get("display_name", "") for k, v in found.items()}

    async def audience(self, audience: Audience, batch: int) -> AsyncIterator[Doc]:
        """Active members in an audience (a campaign's, an activity's) who consented to
        marketing.

        Inherently O(audience): every member in it gets the message. Read region by region
        through (status, consent.marketing, region), so members of other regions and those
        without consent are never read; roles (an array, which nx-27017 cannot match through
        an index) and the level are checked on the rows found. No regions means everyone:
        the same index, on its first two fields. An audience with interests is read through
        the interest entries instead (`_by_interest`).
        """
        if audience.interests:
            async for doc in self._by_interest(audience, batch):
                yield doc
            return
        base: Doc = {"status": "active", "consent.marketing": True}
        minimum = level_rank(audience.min_level)
        if minimum > 0:
            base["level_rank"] = {"$gte": minimum}
        roles = set(audience.roles)
        regions: list[str | None] = list(dict.fromkeys(audience.regions)) or [None]
        for region in regions:
            query = where(base) if region is None else where(base, region=region)
            async for doc in self.members.find(query, batch_size=batch):
                if roles and not roles.intersection(doc.get("roles") or ()):
                    continue
                yield doc

    async def _by_interest(self, audience: Audience, batch: int) -> AsyncIterator[Doc]:
        """The audience read through the interest entries, then its members by primary key a
        batch at a time; consent, status, roles and level are checked on them. O(members with
        those interests in those regions), not O(community)."""
        roles, minimum = set(audience.roles), level_rank(audience.min_level)
        async for ids in self._interested(audience, batch):
            for doc in (await self.members_by_id(ids)).values():
                if _consenting(doc, roles, minimum):
                    yield doc

    async def _interested(self, audience: Audience, batch: int) -> AsyncIterator[list[str]]:
        """Ids of members with any of the audience's interests (in any of its regions), in
        batches, each member once: interest by interest and region by region through the
        (interest, region) index."""
        seen: set[str] = set()
        ids: list[str] = []
        regions: list[str | None] = list(audience.regions) or [None]
        for interest in audience.interests:
            for region in regions:
                query = where(interest=interest, **({} if region is None else {"region": region}))
                async for entry in self.interests.find(query, {"member_id": 1}, batch_size=batch):
                    if entry["member_id"] in seen:
                        continue
                    seen.add(entry["member_id"])
                    ids.append(entry["member_id"])
                    if len(ids) >= batch:
                        yield ids
                        ids = []
        if ids:
            yield ids

    def coordinators(self, region: str, batch: int) -> AsyncIterator[Doc]:
        """Active coordinators of a region, through the scalar `coordinator_region` (O(them))."""
        return self.members.find(
            where(coordinator_region=region, status="active"), batch_size=batch
        )

    async def set_preferences(self, member_id: str, preferences: Doc) -> bool:
        result = await self.members.update_one(
            where({"_id": member_id, "status": "active"}), {"$set": {"preferences": preferences}}
        )
        return result.matched_count == 1

    # -- campaigns (names for milestone and winner messages) ------------------------------------

    async def remember_campaigns(self, names: dict[str, str]) -> None:
        """Campaign names (campaign id -> name) in one round trip, by primary key."""
        if names:
            await self.campaigns.bulk_write(
                [
                    UpdateOne({"_id": cid}, {"$set": {"name": name}}, upsert=True)
                    for cid, name in names.items()
                ],
                ordered=False,
            )

    async def campaign_names(self, ids: Iterable[str]) -> dict[str, str]:
        found = await by_ids(self.campaigns, (i for i in ids if i), {"name": 1})
        return {k: v.get("name", "") for k, v in found.items()}

    # -- budgets and rate windows: counters guarded by the message that spends them -------------

    async def spend(
        self, collection: str, entries: list[tuple[str, str, str]], limit: int, expires_at: datetime
    ) -> set[int]:
        """Spend one unit per (key, member_id, message key) if the key's window is below `limit`.

        Returns the indexes of entries allowed. One bulk write (docs/patterns.md, section 2): an
        entry already spent by the same message (a redelivery) stays allowed; a window at its
        limit refuses. Both show as a duplicate key, told apart by reading those windows.
        """
        coll = self.budgets if collection == "budgets" else self.rates
        if not entries:
            return set()
        ops = [
            UpdateOne(
                where(
                    {"_id": key, "count": {"$lt": limit}, f"spent.{message}": {"$exists": False}}
                ),
                {
                    "$inc": {"count": 1},
                    "$set": {f"spent.{message}": 1},
                    "$setOnInsert": {"member_id": member_id, "expires_at": expires_at},
                },
                upsert=True,
            )
            for key, member_id, message in entries
        ]
        try:
            await coll.bulk_write(ops, ordered=False)
            return set(range(len(entries)))
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            refused = failed_indexes(exc)
        windows = await by_ids(coll, {entries[i][0] for i in refused})
        already = {
            i
            for i in refused
            if entries[i][2] in (windows.get(entries[i][0], {}).get("spent") or {})
        }
        return (set(range(len(entries))) - refused) | already


class MembersRepository(Repository):
    """The writes of the members projection made in a use case's unit of work
    (`uow.members`): a dead address's mark, staged between an attempt's sends."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: NotifierStore) -> None:
        super().__init__(uow)
        self.store = store

    def block_channel(self, member_id: str, channel: str, at: datetime) -> Step[UpdateResult]:
        """Stage the mark of a channel whose address is dead (no events)."""
        return self.uow.update(
            self.store.members, {"_id": member_id}, {"$set": {f"blocked.{channel}": epoch_ms(at)}}
        )


class NotifierUnitOfWork(UnitOfWork):
    """A notifier use case's unit of work, owning the service's repositories: the deliveries
    (`uow.deliveries`) and the members projection's staged marks (`uow.members`)."""

    def __init__(self, relay: Publisher, store: NotifierStore) -> None:
        super().__init__(relay)
        self.deliveries: DeliveriesRepository = DeliveriesRepository(self, store)
        self.members: MembersRepository = MembersRepository(self, store)
