"""What the members service says: the projection, members who leave, and erasure.

A member who leaves gives back their places on shifts still to come (sign-up-changed
`cancelled-by-member`, seats go to the waitlist). An erased member's are given back quietly (no
event would be allowed to name them), then every sign-up and attendance of theirs loses its
personal fields: the member id becomes an anonymous token of its own per document (the counts
stay, nothing links them), `recorded_by` naming them too (on sign-ups and on the check-in links
they made), the Idempotency-Key answers about them go, and their messages
(`activities.*.<member_id>`) are erased from ACTIVITIES (securely deleted: their bytes
overwritten), after the events still waiting in their documents are dropped (they would reach
the stream after the erasure). Erased first, anonymised after: a retry after a failure still
finds their documents.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases.ledger import Ledger
from shared.clock import epoch_ms
from shared.events import EventData, MemberLeft

log = logging.getLogger("sarafan.activities")

#: Securely deletes a stream's messages on a subject (the bus's `erase`).
Erase = Callable[[str, str], Awaitable[None]]
#: What an erased member's sign-ups carry instead of their id (and a coordinator's mark).
ERASED = "erased"
MEMBER_EVENTS = ("signed-up", "sign-up-changed", "attended", "no-show")


def anonymous() -> str:
    return f"{ERASED}-{uuid.uuid4().hex[:16]}"


class MembersFollower:
    def __init__(
        self,
        store: ActivitiesStore,
        ledger: Ledger,
        unit_of_work: Callable[[], ActivitiesUnitOfWork],
        erase: Erase,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.unit_of_work = unit_of_work
        self.erase = erase

    async def apply(self, events: list[EventData], now: datetime) -> None:
        """Member events in their order: the projection, then who left, then erasures."""
        await self.store.projection.apply_many(events)
        for data in events:
            if isinstance(data, MemberLeft):
                await self.left(data.member_id, now, erase=data.erase)

    async def left(self, member_id: str, now: datetime, *, erase: bool) -> None:
        upcoming = await self.store.live_signups_of(member_id, epoch_ms(now))
        for signup in (await self.store.signups_by_id([s["_id"] for s in upcoming])).values():
            if signup["status"] in ("confirmed", "waitlisted"):
                await self.ledger.cancel(signup, "cancelled-by-member", now, quiet=erase)
            elif signup["status"] == "pending":
                async with self.unit_of_work() as uow:  # made before the next sign-up's turn
                    uow.signups.cancel_pending(signup["_id"])
        if erase:
            await self.forget(member_id)

    async def forget(self, member_id: str) -> None:
        ids = await self.store.signup_ids_of(member_id)
        await self.store.drop_pending_events(ids, MEMBER_EVENTS)  # straight: before the purge
        await self.erase("ACTIVITIES", f"activities.*.{member_id}")
        # One commit on leaving, in this order: every sign-up anonymised, then the names kept
        # in others' documents, then the Idempotency-Key records.
        async with self.unit_of_work() as uow:
            for signup_id in ids:
                uow.signups.anonymise(signup_id, member_id, anonymous())
            uow.members.erase_names(member_id, ERASED)
        log.info("erased member %s (%d sign-up(s) anonymised)", member_id, len(ids))
