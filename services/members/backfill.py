"""One-time data migrations the store runs at start-up (`MemberStore.ensure_indexes`).

Members stored before a field or a collection existed get theirs once. They belong to no use
case, so they write directly, not through a unit of work (they raise no event).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.members import listing
from services.members.lists import ORDER
from shared.clock import now_ms
from shared.documents import Doc
from shared.query import where
from shared.store import only_duplicates

if TYPE_CHECKING:
    from services.members.store import MemberStore

log = logging.getLogger("sarafan.members.store")

#: How many members the one-time backfill of tag entries reads at once.
BACKFILL_BATCH = 1000


async def backfill_list_keys(store: MemberStore) -> None:
    # Members stored before list_key existed (the first slice) get theirs once.
    missing = store.members.find(where(list_key={"$exists": False}))
    async for doc in missing:
        try:
            key = listing.list_key(doc["joined_at"], doc["_id"])
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            # One document without a usable join time must not stop the service starting;
            # it stays unlisted (the id only: the document may hold personal data).
            log.warning(
                "member %s has no usable joined_at (%s): not listed",
                doc["_id"],
                type(exc).__name__,
            )
            continue
        await store.members.update_one({"_id": doc["_id"]}, {"$set": {"list_key": key}})
        await _insert_entries(store, list(listing.tag_entries({**doc, "list_key": key}).values()))


async def backfill_tags(store: MemberStore) -> None:
    # Members stored before the listing entries existed get theirs, once: a walk over the
    # whole collection in join order (at start-up only, never on a request).
    done = "member-tags"
    if await store.migrations.find_one({"_id": done}):
        return
    after = ""
    fields = {"status": 1, "region": 1, "roles": 1, "interests": 1, "list_key": 1}
    while True:
        batch = (
            await store.members.find(where(list_key={"$gt": after}), fields)
            .sort(ORDER)
            .limit(BACKFILL_BATCH)
            .to_list(None)
        )
        if not batch:
            break
        await _insert_entries(
            store, [e for doc in batch for e in listing.tag_entries(doc).values()]
        )
        after = batch[-1]["list_key"]
    try:
        await store.migrations.insert_one({"_id": done, "at_ms": now_ms()})
    except DuplicateKeyError:
        pass  # another replica finished it too


async def _insert_entries(store: MemberStore, entries: list[Doc]) -> None:
    # The backfills' form of MembersRepository.add_entries (no use case, so no unit of work).
    if not entries:
        return
    stamped = [{**e, "written_ms": now_ms()} for e in entries]
    try:
        await store.tags.insert_many(stamped, ordered=False)
    except BulkWriteError as exc:
        if not only_duplicates(exc):
            raise
