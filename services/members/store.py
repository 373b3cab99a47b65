"""The members service's MongoDB collections: its documents read and written, nothing more.

Every filter goes through `shared.query.where` (the indexed form on both servers); which
index serves which query is in docs/members.md, "Queries and indexes". The service's unit of
work (`MembersUnitOfWork`) owns its repository, `uow.members` (`MembersRepository`): what a
use case writes, it STAGES through it, which returns the step (or nothing) and never commits.
The use case commits, where the next move depends on a write's outcome and at the end of its
block; the commit makes the writes in the order staged, each document with its events, and
publishes them. The listing entries (`member_tags`) written or removed with a member, and an
erased member's Idempotency-Key records, are staged by the same repository. `MemberStore`
holds the collections and the reads; its direct writes are only those of no use case: the
eraser's (`forget_entries`, `forget_requests`, the purge phase; erasure.py) and the
start-up backfills (backfill.py).

How an event rides in its document (the outbox) is the kernel's: this module is the one place
of the service that builds or reads it (`erased_document`, the erasure bookkeeping).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.results import BulkWriteResult, UpdateResult

from services.members import domain, listing
from services.members.backfill import backfill_list_keys, backfill_tags
from services.members.contacts import CONTACT_KINDS
from services.members.lists import READABLE, MemberLists
from shared.clock import now_ms
from shared.documents import Doc
from shared.events import CloudEvent
from shared.http import forget_requests_of, requests_of
from shared.outbox_layout import (
    carrying,
    has_pending,
    pending_events,
    pending_only,
    unchanged_pending,
)
from shared.outbox_port import Publisher
from shared.query import setting, where
from shared.uow import Repository, Step, UnitOfWork, Write


class ContactTaken(Exception):
    """Another member already has this email, phone or telegram (HTTP 409)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CodeTaken(Exception):
    pass


@dataclass(frozen=True)
class StagedUpdate:
    """A member's guarded update staged in a unit of work (`MembersRepository.update`).

    `step` is the write: its `matched_count` says whether it won against other writes.
    `member` is the document as far as the update names it (for `MemberStore.refusal`, when
    a unique index refuses it); `obsolete`, the listing entries it makes stale, to remove once
    it landed (`MembersRepository.remove_entries`)."""

    step: Step[UpdateResult]
    member: Doc
    obsolete: list[str]


class MemberStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.members = db["members"]
        # One small document per (tag, status, region) a member is listed under: the
        # role/interest filters of the member list (see listing.list_tags).
        self.tags = db["member_tags"]
        # One-time data migrations that have run (so a restart does not repeat them).
        self.migrations = db["migrations"]
        # The kernel's Idempotency-Key records (shared/http/idempotency.py) hold the join
        # response, which has personal data: erasure deletes the member's records too.
        self.idempotency = db["idempotency_keys"]
        #: The pages of the member list and of referrals.
        self.lists = MemberLists(self.members, self.tags)

    async def ensure_indexes(self) -> None:
        # One person joins once: each contact kind is unique among members that have it.
        # These also serve the look-up by contact ({kind: {$eq: v}}) of an import.
        for kind in CONTACT_KINDS:
            await self.members.create_index(
                kind,
                unique=True,
                name=f"{kind}_unique",
                partialFilterExpression={kind: {"$type": "string"}},
            )
        await self.members.create_index("referral_code", unique=True, name="code_unique")
        # A referrer's referrals in join order, and their count.
        await self.members.create_index([("referred_by", 1), ("list_key", 1)])
        # The listing order (join time, then id) is one unique field: nx-27017 cannot index a
        # compound key naming `_id`, and compares dates to the second only.
        await backfill_list_keys(self)  # first: a unique index refuses many missing keys
        await self.members.create_index("list_key", unique=True, name="list_key_unique")
        # The member list by status, and by status and region, in join order.
        await self.members.create_index([("status", 1), ("list_key", 1)])
        await self.members.create_index([("status", 1), ("region", 1), ("list_key", 1)])
        await self.members.create_index("purge", sparse=True)
        await self.members.create_index("idempotency_record", sparse=True)
        # The member list by role and/or interest (and region), in join order.
        await self.tags.create_index([("tag", 1), ("status", 1), ("list_key", 1)])
        await self.tags.create_index([("tag", 1), ("status", 1), ("region", 1), ("list_key", 1)])
        await self.tags.create_index("member_id")  # erasure removes every entry of a member
        await backfill_tags(self)

    # -- unique values -------------------------------------------------------------------------

    async def refusal(self, member: Doc, exc: DuplicateKeyError) -> Exception:
        """Which unique index refused a write of `member`: CodeTaken, ContactTaken, or `exc`
        itself when neither (to raise in its place)."""
        # Ask the data, not the server's message text, whose wording differs between MongoDB
        # and nx-27017.
        code = member.get("referral_code")
        if code:
            holder = await self.members.find_one(where(referral_code=code), {"_id": 1})
            if holder is not None and holder["_id"] != member["_id"]:
                return CodeTaken()
        for kind in CONTACT_KINDS:
            holder = await self.holder_of(kind, member.get(kind))
            if holder is not None and holder["_id"] != member["_id"]:
                return ContactTaken(kind)
        return exc

    async def holder_of(
        self, kind: str, value: str | None, projection: dict[str, Any] | None = None
    ) -> Doc | None:
        """The member who has this contact, if anyone (served by the contact's unique index)."""
        if not value:
            return None
        return await self.members.find_one(where({kind: value}), projection or {"_id": 1})

    async def taken_kind(self, contacts: Mapping[str, str | None]) -> str | None:
        """The first kind among `contacts` another member has (None: all free)."""
        for kind in CONTACT_KINDS:
            if await self.holder_of(kind, contacts.get(kind)) is not None:
                return kind
        return None

    # -- reading -------------------------------------------------------------------------------

    async def get(self, member_id: str) -> Doc | None:
        """A member (active or left); None when unknown or erased."""
        doc = await self.members.find_one({"_id": member_id}, READABLE)
        return None if doc is None or doc.get("status") == "erased" else doc

    async def get_whole(self, member_id: str) -> Doc | None:
        """The whole document, pending events and tombstones included (leaving, erasure)."""
        return await self.members.find_one({"_id": member_id})

    async def by_idempotency_record(self, record: str) -> Doc | None:
        """The active member a join with this Idempotency-Key record created, if any."""
        # Only the record's own index: the status is checked on the one document it finds.
        doc = await self.members.find_one(where(idempotency_record=record), READABLE)
        return doc if doc is not None and doc.get("status") == "active" else None

    async def by_code(self, code: str) -> Doc | None:
        return await self.members.find_one(where(referral_code=code), READABLE)

    # -- the eraser's repeats (direct writes, outside any use case) -----------------------------

    async def forget_entries(self, member_id: str) -> None:
        """Every listing entry of a member (they hold the region), at once: the eraser's
        repeat, outside any use case (`MembersRepository.forget` stages the same for the
        leaving use case)."""
        await self.tags.delete_many(where(member_id=member_id))

    async def forget_requests(self, member_id: str) -> None:
        """Every Idempotency-Key record of a request about the member (the kernel indexes
        them by the member the request or its response names), at once: the eraser's
        repeat, outside any use case."""
        await forget_requests_of(self.idempotency, member_id)

    # -- erasure bookkeeping -------------------------------------------------------------------

    async def erasures_pending(self) -> list[str]:
        # `purge` is a phase name (a string) while an erasure is unfinished: a range on it is
        # served by its sparse index, where `$exists` would read every member.
        docs = self.members.find(where(purge={"$gt": ""}), {"_id": 1})
        return [doc["_id"] async for doc in docs]

    async def purge_phase(self, member_id: str) -> str | None:
        doc = await self.members.find_one({"_id": member_id}, {"purge": 1})
        return (doc or {}).get("purge")

    async def set_purge_phase(self, member_id: str, phase: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$set": {"purge": phase}})

    async def purge_done(self, member_id: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$unset": {"purge": ""}})

    async def unpublished_on_subjects_of(self, member_id: str) -> bool:
        """Is an event whose subject names this member still waiting to be published?

        Their own events ride in their document; referral-made (subject: the referrer) rides
        in the document of each member they referred.
        """
        own = await self.members.find_one(where({"_id": member_id}, **has_pending()), {"_id": 1})
        if own is not None:
            return True
        referred = self.members.find(where(referred_by=member_id, **has_pending()), pending_only())
        async for doc in referred:
            if any(e.get("subject") == member_id for e in pending_events(doc)):
                return True
        return False


class MembersRepository(Repository):
    """The members' documents a use case writes, staged in the unit of work that owns this
    repository (`uow.members`): a member with their events, their listing entries
    (`member_tags`) written or removed with them, and an erased member's Idempotency-Key
    records. A method returns the step (or nothing); the use case commits. Reads, and the
    collections, are the store's."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: MemberStore) -> None:
        super().__init__(uow)
        self.store = store

    # -- joining -------------------------------------------------------------------------------

    def insert(self, member: Doc, events: list[CloudEvent]) -> Step[None]:
        """Stage the insert of a new member with their first events (in the same write); the
        step is the member's insert (a DuplicateKeyError at its commit: `join_refused`).

        Their listing entries are staged first: a crash in between leaves entries without a
        member, which listings skip (and drop), never a member missing from a listing.
        """
        self.add_entries(list(listing.tag_entries(member).values()))
        return self.uow.insert(self.store.members, member, events)

    async def join_refused(self, member: Doc, exc: DuplicateKeyError) -> Exception:
        """Why a new member's insert was refused (`MemberStore.refusal`). Unless the referral
        code collided (a new code keeps the same entries), stages the removal of the listing
        entries staged with it; the caller commits that before it answers."""
        refused = await self.store.refusal(member, exc)
        if not isinstance(refused, CodeTaken):
            self.remove_entries(e["_id"] for e in listing.tag_entries(member).values())
        return refused

    def insert_many(
        self, members: list[tuple[Doc, list[CloudEvent]]]
    ) -> Step[BulkWriteResult | None]:
        """Stage the insert of new members, each with its events, in one unordered write.
        After its commit the step's `refused` lists the positions a unique index refused (the
        caller finds out which); other errors raise at the commit."""
        writes = [Write.insert(member, events) for member, events in members]
        return self.uow.bulk(self.store.members, writes, skip_duplicates=True)

    def add_entries(self, entries: list[Doc]) -> None:
        """Stage the listing entries of new members (ids never used before; a repeat is a
        duplicate, skipped): they raise no event."""
        if not entries:
            return
        now = now_ms()
        writes = [Write.insert({**e, "written_ms": now}) for e in entries]
        self.uow.bulk(self.store.tags, writes, skip_duplicates=True)

    def remove_entries(self, entry_ids: Iterable[str]) -> None:
        """Stage the removal of these listing entries."""
        ids = list(entry_ids)
        if ids:
            self.uow.delete(self.store.tags, {"_id": {"$in": ids}})

    def update(
        self,
        member_id: str,
        version: int,
        fields: Doc,
        events: list[CloudEvent],
        *,
        unset: Iterable[str] = (),
        current: Doc | None = None,
    ) -> StagedUpdate:
        """Stage the change of an active member's `fields` (and the removal of those named in
        `unset`), landing only if nobody changed the member since `version` (optimistic) and
        they are still active; the use case commits it and reads whether it matched.

        With `current` (the document the change was computed from), the listing entries
        follow: the new ones are staged before the member; the old ones are the update's
        `obsolete`, removed once it landed.
        """
        change = setting(fields, unset)
        before: dict[str, Doc] = {}
        after: dict[str, Doc] = {}
        if current is not None:
            before = listing.tag_entries(current)
            after = listing.tag_entries(_applied(current, change))
            self._refresh_entries([e for i, e in after.items() if i not in before])
        change["$inc"] = {"version": 1}
        flt = where({"_id": member_id, "version": version, "status": "active"})
        return StagedUpdate(
            self.uow.update(self.store.members, flt, change, events),
            {"_id": member_id, **fields},
            [i for i in before if i not in after],
        )

    def _refresh_entries(self, entries: list[Doc]) -> None:
        # Upserts by id (not inserts): an entry left over from an earlier change gets a new
        # `written_ms`, so a reader that judged it stale a moment ago keeps it.
        if not entries:
            return
        now = now_ms()
        self.uow.bulk(
            self.store.tags,
            [
                Write.update(
                    e["_id"], {"_id": e["_id"]}, {"$set": {**e, "written_ms": now}}, upsert=True
                )
                for e in entries
            ],
        )

    def replace_with_tombstone(
        self, member: Doc, erased_at: datetime, left: CloudEvent
    ) -> Step[BulkWriteResult | None]:
        """Stage the swap of the profile (read whole) for its tombstone (`erased_document`),
        unless it changed since it was read: it landed if the commit's result matched one.

        The guard includes the pending events as read: the relay does not bump `version`
        when it removes a published one, and the tombstone must not resurrect it. The swap is
        an update setting the tombstone's fields and unsetting every other (with the guard
        that is the same as replacing the document), so that the unit of work knows whether
        it landed: the tombstone's pending events are published on commit if it did, and
        nothing is assumed if it lost the race. Once it landed, `forget` follows.
        """
        tomb = erased_document(member, erased_at, left.model_dump(mode="json"))
        guard = where(
            {"_id": member["_id"], "version": member.get("version", 1)},
            **unchanged_pending(member),
        )
        # Only what changes is set: a date `$set` by a top-level path would be stored as a
        # string on nx-27017 (joined_at stays as it was inserted).
        changed = {k: v for k, v in tomb.items() if k not in member or member[k] != v}
        update = setting(changed, (k for k in member if k not in tomb))
        events = [CloudEvent.model_validate(e) for e in pending_events(tomb)]
        return self.uow.bulk(
            self.store.members, [Write(UpdateOne(guard, update), tomb["_id"], events)]
        )

    def forget(self, member: Doc) -> None:
        """Stage the removal of what an erased member (read whole before their tombstone)
        leaves besides it: their listing entries (they hold the region), their join's
        Idempotency-Key record, and every record the kernel indexed by their id (the records
        keep the responses). The eraser also does this until the erasure is finished (after
        a crash in between)."""
        member_id = member["_id"]
        self.uow.delete(self.store.tags, where(member_id=member_id))
        if member.get("idempotency_record"):
            self.uow.delete(self.store.idempotency, {"_id": member["idempotency_record"]})
        self.uow.delete(self.store.idempotency, requests_of(member_id))


class MembersUnitOfWork(UnitOfWork):
    """The members service's unit of work: it owns the service's repositories, and a use case
    stages through them (`uow.members.insert(member, events)`)."""

    def __init__(self, relay: Publisher, store: MemberStore) -> None:
        super().__init__(relay)
        self.members: MembersRepository = MembersRepository(self, store)


def _applied(current: Doc, change: Doc) -> Doc:
    """The document as it will be after a `$set`/`$unset` of top-level fields."""
    after = {**current, **change.get("$set", {})}
    for name in change.get("$unset", {}):
        after.pop(name, None)
    return after


def erased_document(
    member: Mapping[str, Any], erased_at: datetime, left_event: Mapping[str, Any]
) -> Doc:
    """The anonymous tombstone of an erased member (domain.tombstone) as it is stored: holding
    the events still pending that carry no personal data (domain.kept_at_erasure; nobody has
    seen the others, and they must never be published) plus the member-left event, so the
    relay still publishes them."""
    kept = domain.kept_at_erasure(pending_events(member))
    return carrying(domain.tombstone(member, erased_at), [*kept, left_event])
