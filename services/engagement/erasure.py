"""What forgetting an erased member (member-left with `erase`) reads, collection by collection.

Posts and comments stay as anonymous tombstones (no author, title, body or tags) so that
others' answers and the community figures keep their history; hours entries, the member's
activity record, level and drift records go, and so do the kept responses of the member's
requests (an Idempotency-Key replay would show their name and text again). The use case that
runs these, and erases the stream's messages, is `MemberEvents.forget` (usecases/members.py).

Everything the erasure reads is read first (here); then the use case stages the writes through
its unit of work's repositories (repositories.py; none of them carries an event, and no outcome
of theirs is read), and the one commit makes them in the order staged, an order a retry relies
on (the counters are taken back before the deletes, so a retry finds what to take back). An
erasure that fails before its commit has written nothing.
"""

from __future__ import annotations

from services.engagement import counted
from services.engagement.store import EngagementStore
from shared.clock import utcnow
from shared.documents import Doc
from shared.outbox_layout import drop_pending
from shared.query import where


async def post_ids_of(store: EngagementStore, member_id: str) -> list[str]:
    found = store.posts.find(where(author_id=member_id), {"_id": 1})
    return [d["_id"] async for d in found]


async def drop_post_events(store: EngagementStore, post_ids: list[str]) -> None:
    """The post-created events of the member's posts still waiting to be published quote the
    title; they must not reach the stream after it was erased. Made at once (the kernel's
    operation, its own guarded writes): before the stream's messages are erased."""
    await drop_pending(store.posts, post_ids, "post-created")


async def decision_requests_of(store: EngagementStore, member_id: str) -> list[str]:
    """The Idempotency-Key records of decisions on the member's hours (filed under the decider:
    the member is found by the notes `uow.requests.note_decision_request` made)."""
    found = store.decision_requests.find(where(member_id=member_id), {"_id": 1})
    return [d["_id"] async for d in found]


async def uncounted(store: EngagementStore, member_id: str) -> list[Doc | None]:
    """The deltas taking back from the kept counters what the erasure deletes: the member's
    returns after drift and approved hours (counted.py; staged before the deletes, so a retry
    finds them again)."""
    # The counters' write stamp: real time, not the service's clock (folding relies on it,
    # shared/tally.py).
    now = utcnow()
    deltas: list[Doc | None] = []
    async for r in store.returns.find(where(member_id=member_id), {"at_ms": 1}):
        deltas.append(counted.returned(store.counters, r["_id"], int(r["at_ms"]), now, n=-1))
    approved = where(member_id=member_id, status="approved")
    async for h in store.hours.find(approved, {"hours": 1, "decided_ms": 1}):
        amount, decided = -float(h["hours"]), int(h["decided_ms"])
        deltas.append(counted.hours(store.counters, h["_id"], amount, decided, now))
    return deltas


async def finished(store: EngagementStore, member_ids: list[str]) -> set[str]:
    """Those of these members whose erasure here is finished: their standing is a tombstone
    (the erasure's last write)."""
    found = await store.standings(member_ids)
    return {m for m, doc in found.items() if doc.get("erased")}
