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

from services.activities.store import ActivitiesStore
from services.activities.usecases.ledger import Ledger
from shared.clock import epoch_ms
from shared.events import EventData, MemberLeft
from shared.http import forget_requests_of
from shared.outbox_layout import FORGET_DEAD_EVENTS, drop_pending
from shared.query import where
from shared.uow import UnitOfWork

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
        unit_of_work: Callable[[], UnitOfWork],
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
                    uow.update(
                        self.store.signups,
                        where({"_id": signup["_id"], "status": "pending"}),
                        {
                            "$set": {"status": "cancelled"},
                            "$unset": {"live_end_ms": "", "pending_ms": ""},
                        },
                    )
        if erase:
            await self.forget(member_id)

    async def forget(self, member_id: str) -> None:
        ids = [
            d["_id"] async for d in self.store.signups.find(where(member_id=member_id), {"_id": 1})
        ]
        for event_type in MEMBER_EVENTS:
            await drop_pending(self.store.signups, ids, event_type)
        await self.erase("ACTIVITIES", f"activities.*.{member_id}")
        async with self.unit_of_work() as uow:  # made on leaving, before what follows
            for signup_id in ids:
                uow.update(
                    self.store.signups,
                    where({"_id": signup_id, "member_id": member_id}),
                    {"$set": {"member_id": anonymous()}, "$unset": FORGET_DEAD_EVENTS},
                )
        for recorded in (self.store.signups, self.store.links):
            await recorded.update_many(
                where(recorded_by=member_id), {"$set": {"recorded_by": ERASED}}
            )
        await self.store.activities.update_many(
            where(organiser_id=member_id), {"$set": {"organiser_id": ERASED}}
        )
        await forget_requests_of(self.store.idempotency, member_id)
        log.info("erased member %s (%d sign-up(s) anonymised)", member_id, len(ids))
