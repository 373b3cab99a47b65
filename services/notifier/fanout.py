"""Fan-out: one notice becomes a delivery per member and channel, written in batches.

Each batch of recipients is written in a few commits: the budgets in one bulk write, the
deliveries (each in-app one with its notification-sent) in one `bulk` insert, whose commit hands
the batch's notification-sent events to the relay at once (one publishing round for the batch,
with no read back), then the digest items in one bulk write. A few round trips per thousand
recipients, never one per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.notifier import deliveries, domain
from services.notifier.deliveries import Cause, DigestEntry
from services.notifier.domain import Message, Plan, Recipient
from services.notifier.rules import Notice
from services.notifier.store import NotifierStore, NotifierUnitOfWork, budget_key
from shared import tracing
from shared.clock import Clock
from shared.events import CloudEvent
from shared.metrics import Metrics
from shared.skipped import SkippedDocuments

log = logging.getLogger("sarafan.notifier.fanout")

BUDGET_KEPT = timedelta(days=3)
#: A message for one member: its cause, the message, the member's projection.
Item = tuple[Cause, Message, dict[str, Any]]
Planned = tuple[Cause, Message, Recipient, Plan]


@dataclass(frozen=True)
class Limits:
    daily_budget: int
    fanout_batch: int


class Fanout:
    def __init__(
        self,
        store: NotifierStore,
        unit_of_work: Callable[[], NotifierUnitOfWork],
        metrics: Metrics,
        available: frozenset[str],
        limits: Limits,
        clock: Clock,
        wake_dispatcher: Callable[[], None],
        skipped: SkippedDocuments,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.metrics = metrics
        self.available = available
        self.limits = limits
        self.clock = clock
        self.wake_dispatcher = wake_dispatcher
        self.skipped = skipped

    def _count(self, channel: str, outcome: str, n: int = 1) -> None:
        if n:
            self.metrics.notifications.labels(self.metrics.service, channel, outcome).inc(n)

    async def notify(self, cause: Cause, notice: Notice) -> int:
        """Deliver one notice to all its recipients, batch by batch; returns how many members."""
        total = 0
        # Two batches at a time: one is planned while the other waits on the database, so this
        # process's work and the database's overlap. The batches hold different members: their
        # writes, budgets included, may land in any order.
        writing: list[asyncio.Task[list[str]]] = []
        try:
            async for batch in self._recipients(notice):
                docs = [d for d in batch if d["_id"] not in notice.exclude]
                items = [(cause, notice.message, d) for d in docs]
                writing.append(asyncio.create_task(self.deliver(items)))
                total += len(docs)
                if len(writing) >= 2:
                    await writing.pop(0)
            while writing:
                await writing.pop(0)
        finally:
            for task in writing:
                task.cancel()
        return total

    async def _recipients(self, notice: Notice) -> AsyncIterator[list[dict[str, Any]]]:
        size = self.limits.fanout_batch
        if notice.member_ids:
            found = await self.store.members_by_id(notice.member_ids)
            yield [found[m] for m in notice.member_ids if m in found]
            return
        if notice.audience is not None:
            cursor = self.store.audience(notice.audience, size)
        elif notice.coordinators_of is not None:
            cursor = self.store.coordinators(notice.coordinators_of, size)
        else:
            return
        batch: list[dict[str, Any]] = []
        async for doc in cursor:
            batch.append(doc)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _plan(self, items: list[Item], now: datetime) -> list[Planned]:
        planned: list[Planned] = []
        for cause, message, doc in items:
            try:
                member = Recipient.from_doc(doc)
                plan = domain.plan(message, member, now, self.available)
            except Exception as exc:
                # One projection that cannot be read (hand-edited, an old version) must not
                # stop a campaign's announcement to everyone else: skipped, logged, counted.
                self.skipped.skip("members", doc.get("_id"), exc, "fan-out")
                continue
            if plan is not None and plan.expired:
                self._count(plan.expired, "expired")
            if plan is not None:
                planned.append((cause, message, member, plan))
        return planned

    async def deliver(self, items: list[Item]) -> list[str]:
        """Plan, spend budgets and write the deliveries of many (cause, message, member) at once
        in one unit of work; returns the ids of the new in-app deliveries."""
        now = self.clock()
        planned = await self._spend_budgets(self._plan(items, now), now)
        docs: list[dict[str, Any]] = []
        events: dict[str, list[CloudEvent]] = {}
        digests: list[DigestEntry] = []
        for cause, message, member, plan in planned:
            doc, sent = deliveries.inapp(cause, message, member, now)
            docs.append(doc)
            events[doc["_id"]] = sent
            if not plan.route:
                continue
            if plan.digest_day is not None:
                digests.append(deliveries.digest_entry(cause, message, member, plan, now))
            else:
                # The cause's trace goes with it: the dispatcher's send continues it.
                push = deliveries.push(cause, message, member, plan, now)
                docs.append({**push, **tracing.context_of(cause)})
        # The in-app channel is its store: a client span in each cause's trace.
        with tracing.sending("notifier", "inapp", [cause for cause, *_ in planned]):
            async with self.unit_of_work() as uow:
                # Committed here: which deliveries are new (not a redelivery's) is counted.
                new = set(await uow.commit(uow.deliveries.insert(docs, events)))
        await self._add_to_digests(digests)
        inapp_ids = [d["_id"] for d in docs if d["channel"] == "inapp" and d["_id"] in new]
        self._count("inapp", "sent", len(inapp_ids))
        if len(new) > len(inapp_ids) or digests:
            self.wake_dispatcher()
        return inapp_ids

    async def _spend_budgets(self, planned: list[Planned], now: datetime) -> list[Planned]:
        """Non-urgent pushed messages spend the member's daily budget (across all campaigns and
        categories); over budget, the message still reaches the inbox but is not pushed."""
        spending = [i for i, (_, _, _, p) in enumerate(planned) if p.route and p.budget_day]
        if not spending:
            return planned
        entries = [
            (
                budget_key(planned[i][2].member_id, planned[i][3].budget_day),  # type: ignore[arg-type]
                planned[i][2].member_id,
                planned[i][0].id,
            )
            for i in spending
        ]
        allowed = await self.store.spend(
            "budgets", entries, self.limits.daily_budget, now + BUDGET_KEPT
        )
        refused = {spending[k] for k in range(len(spending)) if k not in allowed}
        for i in refused:
            self._count(planned[i][3].route[0], "over_budget")
        return [
            (c, m, r, p.without_push() if i in refused else p)
            for i, (c, m, r, p) in enumerate(planned)
        ]

    async def _add_to_digests(self, entries: list[DigestEntry]) -> None:
        """A digest already on its way takes nothing more: the item joins the next day's."""
        async with self.unit_of_work() as uow:
            for _ in range(3):
                if not entries:
                    return
                # Committed at each round: the items refused go to the next day's digest.
                step = uow.deliveries.add_to_digests(entries)
                await uow.commit(step)
                entries = [deliveries.next_day(entries[i]) for i in step.refused]
        if entries:
            log.warning("%d digest item(s) found no open digest", len(entries))
