"""The writes that forget an erased member (member-left with `erase`), collection by collection.

Posts and comments stay as anonymous tombstones (no author, title, body or tags) so that
others' answers and the community figures keep their history; hours entries, the member's
activity record, level and drift records go, and so do the kept responses of the member's
requests (an Idempotency-Key replay would show their name and text again). The use case that
runs these, and erases the stream's messages, is `MemberEvents.forget` (usecases/members.py).

They are STAGED in the unit of work the use case gives (none of them carries an event, and no
outcome of theirs is read): everything the erasure reads is read first, then the one commit
makes the writes in the order staged here, an order a retry relies on (the counters are taken
back before the deletes, so a retry finds what to take back). An erasure that fails before its
commit has written nothing.
"""

from __future__ import annotations

from services.engagement import counted
from services.engagement.store import EngagementStore
from shared.clock import utcnow
from shared.http import requests_of
from shared.outbox_layout import FORGET_DEAD_EVENTS, drop_pending
from shared.query import where
from shared.uow import UnitOfWork


async def post_ids_of(store: EngagementStore, member_id: str) -> list[str]:
    found = store.posts.find(where(author_id=member_id), {"_id": 1})
    return [d["_id"] async for d in found]


async def drop_post_events(store: EngagementStore, post_ids: list[str]) -> None:
    """The post-created events of the member's posts still waiting to be published quote the
    title; they must not reach the stream after it was erased. Made at once (the kernel's
    operation, its own guarded writes): before the stream's messages are erased."""
    await drop_pending(store.posts, post_ids, "post-created")


async def forget_requests(store: EngagementStore, uow: UnitOfWork, member_id: str) -> None:
    """Stage the deletes of the Idempotency-Key records about the member: those the kernel
    filed under them (the first member named in the request) and the decisions on their hours."""
    uow.delete(store.idempotency, requests_of(member_id))
    found = store.decision_requests.find(where(member_id=member_id), {"_id": 1})
    ids = [d["_id"] async for d in found]
    if ids:
        uow.delete(store.idempotency, {"_id": {"$in": ids}})
        uow.delete(store.decision_requests, {"_id": {"$in": ids}})


async def uncount(store: EngagementStore, uow: UnitOfWork, member_id: str) -> None:
    """Stage taking back from the kept counters what the erasure deletes: the member's returns
    after drift and approved hours (counted.py; before the deletes, so a retry finds them
    again)."""
    # The counters' write stamp: real time, not the service's clock (folding relies on it,
    # shared/tally.py).
    now = utcnow()
    deltas = []
    async for r in store.returns.find(where(member_id=member_id), {"at_ms": 1}):
        deltas.append(counted.returned(store.counters, r["_id"], int(r["at_ms"]), now, n=-1))
    approved = where(member_id=member_id, status="approved")
    async for h in store.hours.find(approved, {"hours": 1, "decided_ms": 1}):
        amount, decided = -float(h["hours"]), int(h["decided_ms"])
        deltas.append(counted.hours(store.counters, h["_id"], amount, decided, now))
    store.count(uow, deltas)


async def finished(store: EngagementStore, member_ids: list[str]) -> set[str]:
    """Those of these members whose erasure here is finished: their standing is a tombstone
    (the erasure's last write)."""
    found = await store.standings(member_ids)
    return {m for m, doc in found.items() if doc.get("erased")}


async def erase_member(store: EngagementStore, uow: UnitOfWork, member_id: str) -> None:
    """Stage forgetting a member's personal data in every collection (the module's text says
    what stays), in the order the commit makes it."""
    await forget_requests(store, uow, member_id)
    await uncount(store, uow, member_id)
    removed = {"title": "", "body": "", "tags": [], "author_id": None}
    mine = where(author_id=member_id)
    # Events set aside as unpublishable (and their error strings) go with the text.
    uow.update_many(
        store.posts, mine, {"$set": removed, "$unset": {"open": "", **FORGET_DEAD_EVENTS}}
    )
    uow.update_many(
        store.posts, where(accepted_answerer_id=member_id), {"$set": {"accepted_answerer_id": None}}
    )
    uow.update_many(
        store.comments,
        mine,
        {"$set": {"body": "", "author_id": None}, "$unset": FORGET_DEAD_EVENTS},
    )
    uow.update_many(
        store.comments, where(post_author_id=member_id), {"$set": {"post_author_id": None}}
    )
    uow.update_many(store.reactions, where(member_id=member_id), {"$set": {"member_id": None}})
    uow.update_many(
        store.reactions, where(post_author_id=member_id), {"$set": {"post_author_id": None}}
    )
    uow.delete(store.hours, where(member_id=member_id))
    uow.update_many(store.hours, where(decided_by=member_id), {"$set": {"decided_by": None}})
    uow.delete(store.returns, where(member_id=member_id))
    # Last: the standing's tombstone says the erasure here is finished (a commit that failed
    # before it leaves no tombstone, and the redelivered member-left erases again).
    store.erase_standing(uow, member_id)
