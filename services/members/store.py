"""The members service's MongoDB collections and queries."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.members.domain import CONTACT_KINDS, list_key
from shared.events import CloudEvent
from shared.outbox import update_with_outbox, with_outbox

#: Never shown to clients: the outbox, and the bookkeeping of erasure.
HIDDEN = {"outbox": 0, "idempotency_record": 0}
#: Listing order, and the key of the pagination cursor: unique and never changing.
ORDER = [("list_key", 1)]


class ContactTaken(Exception):
    """Another member already has this email, phone or telegram (HTTP 409)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CodeTaken(Exception):
    pass


class MemberStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.members = db["members"]
        # The kernel's Idempotency-Key records (shared/http.py) hold the join response, which
        # has personal data: erasure deletes the member's record too.
        self.idempotency = db["idempotency_keys"]

    async def ensure_indexes(self) -> None:
        # One person joins once: each contact kind is unique among members that have it.
        for kind in CONTACT_KINDS:
            await self.members.create_index(
                kind,
                unique=True,
                name=f"{kind}_unique",
                partialFilterExpression={kind: {"$type": "string"}},
            )
        await self.members.create_index("referral_code", unique=True, name="code_unique")
        await self.members.create_index("referred_by")
        # The listing order (join time, then id) is one unique field: nx-27017 cannot index a
        # compound key naming `_id`, and compares dates to the second only.
        await self._backfill_list_keys()  # first: a unique index refuses many missing keys
        await self.members.create_index("list_key", unique=True, name="list_key_unique")
        await self.members.create_index("region")
        await self.members.create_index("purge", sparse=True)
        await self.members.create_index("idempotency_record", sparse=True)

    async def _which_unique(self, member: dict[str, Any], exc: DuplicateKeyError) -> Exception:
        # Which unique index refused the write: ask the data, not the server's message text,
        # whose wording differs between MongoDB and nx-27017.
        code = member.get("referral_code")
        if code and await self.members.find_one(
            {"referral_code": code, "_id": {"$ne": member["_id"]}}, {"_id": 1}
        ):
            return CodeTaken()
        for kind in CONTACT_KINDS:
            value = member.get(kind)
            if value and await self.members.find_one(
                {kind: value, "_id": {"$ne": member["_id"]}}, {"_id": 1}
            ):
                return ContactTaken(kind)
        return exc

    async def insert(self, member: dict[str, Any], events: list[CloudEvent]) -> None:
        """Insert a new member with their first events in the same write (the outbox)."""
        try:
            await self.members.insert_one(with_outbox(member, events))
        except DuplicateKeyError as exc:
            raise await self._which_unique(member, exc) from exc

    async def get(self, member_id: str) -> dict[str, Any] | None:
        """A member (active or left); None when unknown or erased."""
        doc = await self.members.find_one({"_id": member_id}, HIDDEN)
        return None if doc is None or doc.get("status") == "erased" else doc

    async def get_with_outbox(self, member_id: str) -> dict[str, Any] | None:
        """The whole document, tombstones included (for leaving and erasure)."""
        return await self.members.find_one({"_id": member_id})

    async def by_idempotency_record(self, record: str) -> dict[str, Any] | None:
        """The active member a join with this Idempotency-Key record created, if any."""
        return await self.members.find_one(
            {"idempotency_record": record, "status": "active"}, HIDDEN
        )

    async def by_code(self, code: str) -> dict[str, Any] | None:
        return await self.members.find_one({"referral_code": code}, HIDDEN)

    async def _backfill_list_keys(self) -> None:
        # Members stored before list_key existed (the first slice) get theirs once.
        async for doc in self.members.find({"list_key": {"$exists": False}}, {"joined_at": 1}):
            key = list_key(doc["joined_at"], doc["_id"])
            await self.members.update_one({"_id": doc["_id"]}, {"$set": {"list_key": key}})

    async def page(
        self, filters: dict[str, Any], after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """One page in join order, strictly after the cursor's member.

        The key is unique and never changes, so members who join while a client walks the
        pages only ever land after the cursor: everyone present at the start comes once.
        """
        query = dict(filters)
        if after is not None:
            query["list_key"] = {"$gt": after}
        return await self.members.find(query, HIDDEN).sort(ORDER).limit(limit).to_list(None)

    async def count_referrals(self, referrer_id: str) -> int:
        return await self.members.count_documents({"referred_by": referrer_id})

    async def update(
        self,
        member_id: str,
        version: int,
        change: dict[str, Any],
        events: list[CloudEvent],
        guard: dict[str, Any] | None = None,
    ) -> bool:
        """Apply an update if nobody changed the member since `version` (optimistic)."""
        update = update_with_outbox(change, events)
        update.setdefault("$inc", {})["version"] = 1
        query = {"_id": member_id, "version": version, **(guard or {})}
        try:
            result = await self.members.update_one(query, update)
        except DuplicateKeyError as exc:
            raise await self._which_unique(
                {"_id": member_id, **change.get("$set", {})}, exc
            ) from exc
        return result.matched_count == 1

    async def replace_with_tombstone(self, member: dict[str, Any], tomb: dict[str, Any]) -> bool:
        """Swap the profile for its tombstone, unless it changed since it was read.

        The guard includes the outbox counter: the relay does not bump `version` when it
        removes a published entry, and the tombstone must not resurrect that entry.
        """
        guard: dict[str, Any] = {"_id": member["_id"], "version": member.get("version", 1)}
        pending = member.get("outbox_pending")
        guard["outbox_pending"] = pending if pending is not None else {"$exists": False}
        result = await self.members.replace_one(guard, tomb)
        if result.matched_count == 1 and member.get("idempotency_record"):
            await self.idempotency.delete_one({"_id": member["idempotency_record"]})
        return result.matched_count == 1

    # -- erasure bookkeeping -------------------------------------------------------------------

    async def erasures_pending(self) -> list[str]:
        docs = self.members.find({"purge": {"$exists": True}}, {"_id": 1})
        return [doc["_id"] async for doc in docs]

    async def purge_phase(self, member_id: str) -> str | None:
        doc = await self.members.find_one({"_id": member_id}, {"purge": 1})
        return (doc or {}).get("purge")

    async def set_purge_phase(self, member_id: str, phase: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$set": {"purge": phase}})

    async def purge_done(self, member_id: str) -> None:
        await self.members.update_one({"_id": member_id}, {"$unset": {"purge": ""}})

    async def unpublished_on_subjects_of(self, member_id: str) -> bool:
        """Is an event whose subject names this member still waiting in an outbox?

        Their own events ride in their document; referral-made (subject: the referrer) rides
        in the document of each member they referred.
        """
        own = await self.members.find_one(
            {"_id": member_id, "outbox_pending": {"$gt": 0}}, {"_id": 1}
        )
        if own is not None:
            return True
        referred = self.members.find(
            {"referred_by": member_id, "outbox_pending": {"$gt": 0}}, {"outbox": 1}
        )
        async for doc in referred:
            if any(e.get("subject") == member_id for e in (doc.get("outbox") or {}).values()):
                return True
        return False
