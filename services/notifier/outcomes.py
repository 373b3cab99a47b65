"""The outcomes of a claimed batch's attempts, written a group at a time (one bulk write each)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from services.notifier.store import NotifierStore, NotifierUnitOfWork
from shared.events import CloudEvent
from shared.uow import Step, Write

log = logging.getLogger("sarafan.notifier.dispatch")

#: Outcomes written together at the most, and the longest an outcome waits for its group: a
#: slow channel's sends (Telegram's 30 a second) are recorded as they go, not at the batch's end.
GROUP = 50
GROUP_SECONDS = 0.5


class Outcomes:
    """What each attempt of one claimed batch changes in its delivery (with the events it
    raises), written in groups: one bulk write of updates guarded by the claim token, instead
    of a round trip per delivery. Each group is committed as it is written, which hands its
    events to the relay. The attempts share the batch's unit of work, and each write staged in
    it is committed at once: nothing waits staged while another attempt commits.

    A group that cannot be written (the database away) is logged and left: its deliveries stay
    claimed until the lease ends and are sent again then (sends are at least once; receivers
    de-duplicate by the delivery id).
    """

    def __init__(self, store: NotifierStore, uow: NotifierUnitOfWork, token: str) -> None:
        self.store = store
        self.uow = uow
        self.token = token
        self._waiting: list[Write] = []
        self._since = time.monotonic()

    async def record(
        self, delivery_id: str, fields: dict[str, Any], events: Iterable[CloudEvent] = ()
    ) -> None:
        """Stage the outcome of one attempt: the delivery's `fields` it changes, with the
        events it raises."""
        self._waiting.append(self.store.outcome(delivery_id, self.token, fields, events))
        if len(self._waiting) >= GROUP or time.monotonic() - self._since >= GROUP_SECONDS:
            await self.flush()

    async def write_now(self, step: Step[Any]) -> None:
        """Commit one write an attempt makes before its outcome (a dead address's mark, a
        fallback delivery), so the database sees them in that order."""
        await self.uow.commit(step)

    async def flush(self) -> None:
        writes, self._waiting = self._waiting, []
        self._since = time.monotonic()
        if not writes:
            return
        try:
            # Committed now (the writes are made as the sends go, not at the batch's end): a
            # slow channel's deliveries do not stay `sending` in the database for the batch.
            await self.uow.commit(self.uow.deliveries.record(writes))
        except Exception as exc:
            log.warning(
                "recording %d outcome(s) failed: %r; they are tried again after the lease",
                len(writes),
                exc,
            )
