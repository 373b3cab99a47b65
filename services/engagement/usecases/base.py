"""What the engagement use cases share: the batches they take, the members and posts they act
on, and inserting a new document once (a use case's write whose outcome it reads: committed
there)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.engagement import contributions as rules
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.store import EngagementStore
from shared.documents import Doc
from shared.events import CloudEvent, EventData
from shared.store import is_duplicate_key
from shared.uow import Step

#: A fetched batch of events, each with its parsed data.
Batch = list[tuple[CloudEvent, EventData]]
#: Securely deletes a stream's messages on a subject (the bus's `erase`): their bytes go too.
Erase = Callable[[str, str], Awaitable[object]]


async def active_member(store: EngagementStore, member_id: str) -> Doc:
    return rules.active_member(await store.member(member_id), member_id)


async def existing_post(store: EngagementStore, post_id: str) -> Doc:
    return rules.existing_post(await store.post(post_id), post_id)


async def inserted(uow: EngagementUnitOfWork, insert: Step[None]) -> bool:
    """Commit `uow` at the staged insert of a new document (the outcome decides what the use
    case answers); False when its id exists already (the same request again, its first answer
    lost: the id comes from its Idempotency-Key)."""
    try:
        await uow.commit(insert)
    except Exception as exc:
        if is_duplicate_key(exc):
            return False
        raise
    return True
