"""Fan-out: one notice becomes a delivery per member and channel, written in batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter

from services.notifier import domain
from services.notifier.domain import Message, Plan, Recipient
from services.notifier.rules import Notice
from services.notifier.store import NotifierStore, budget_key
from shared.events import CloudEvent, NotificationSent, new_event, utcnow
from shared.metrics import Metrics
from shared.outbox import Collection, Relay, with_outbox
from shared.store import epoch_ms

log = logging.getLogger("sarafan.notifier.fanout")

BUDGET_KEPT = timedelta(days=3)


class Clock:
    """The notifier's notion of now; tests move it forward instead of sleeping for hours."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset


class Announcer:
    """Publishes the outbox of new deliveries right away, many documents per round trip.

    The relay's `kick` publishes one document with three round trips (read, publish, mark);
    one campaign's 10,000 deliveries would start 10,000 such tasks. This queues the ids and
    hands them to `Relay.flush_many` up to `batch` at a time (one read, concurrent publishes,
    one bulk write of guarded marks). Whatever is left (NATS away, a crash), the relay's
    sweeper publishes.
    """

    def __init__(
        self, relay: Relay, collection: Collection, workers: int = 4, batch: int = 200
    ) -> None:
        self.relay = relay
        self.collection = collection
        self.workers = workers
        self.batch = batch
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def announce(self, delivery_ids: list[str]) -> None:
        for delivery_id in delivery_ids:
            self.queue.put_nowait(delivery_id)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            ids = [await self.queue.get()]
            while len(ids) < self.batch and not self.queue.empty():
                ids.append(self.queue.get_nowait())
            try:
                await self.publish(ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the sweeper publishes them later
                log.warning("announcing %d deliveries failed: %r", len(ids), exc)

    async def publish(self, delivery_ids: list[str]) -> int:
        return await self.relay.flush_many(self.collection, delivery_ids)


@dataclass(frozen=True)
class Limits:
    daily_budget: int
    fanout_batch: int


def message_parts(message: Message) -> dict[str, Any]:
    """What a delivery (or a digest item) keeps of its message to render it later: the
    template, its facts, and the ids of the members it names (texts.py) — no name."""
    return {
        "template": message.template,
        "context": message.stored_context(),
        "mentions": dict(message.mentions),
    }


def base_delivery(
    cause: CloudEvent, message: Message, member: Recipient, channel: str, now: datetime
) -> dict[str, Any]:
    return {
        "_id": domain.delivery_id(cause.id, member.member_id, channel),
        "member_id": member.member_id,
        "channel": channel,
        **message_parts(message),
        "category": message.category,
        "locale": member.locale,
        "cause_event_id": cause.id,
        "cause_type": cause.type,
        "correlation_id": cause.correlationid,
        "created_at": now,
        "created_ms": epoch_ms(now),
        "attempts": 0,
    }


def inapp_delivery(base: dict[str, Any], cause: CloudEvent, now: datetime) -> dict[str, Any]:
    """Stored is delivered: the inbox is the in-app channel. Announced by notification-sent."""
    sent = new_event(
        NotificationSent(
            notification_id=base["_id"],
            member_id=base["member_id"],
            channel="inapp",
            template=base["template"],
            cause_event_id=cause.id,
        ),
        correlation_id=cause.correlationid,
    )
    return with_outbox(
        {
            **base,
            "status": "delivered",
            "delivered_ms": epoch_ms(now),
            "due_ms": epoch_ms(now),
            "read": False,
        },
        [sent],
    )


class Fanout:
    def __init__(
        self,
        store: NotifierStore,
        metrics: Metrics,
        available: frozenset[str],
        limits: Limits,
        clock: Clock,
        announcer: Announcer,
        wake_dispatcher: Callable[[], None],
        skipped: Counter | None = None,
    ) -> None:
        self.store = store
        self.skipped = skipped
        self.metrics = metrics
        self.available = available
        self.limits = limits
        self.clock = clock
        self.announcer = announcer
        self.wake_dispatcher = wake_dispatcher

    def _skip(self, doc: dict[str, Any], exc: Exception) -> None:
        if self.skipped is not None:
            self.skipped.labels(self.metrics.service, "members").inc()
        # The id and the kind of fault, never the values: they are personal data.
        log.warning(
            "member %s skipped: its projection cannot be read (%s)",
            str(doc.get("_id"))[:100],
            type(exc).__name__,
        )

    def _count(self, channel: str, outcome: str, n: int = 1) -> None:
        if n:
            self.metrics.notifications.labels(self.metrics.service, channel, outcome).inc(n)

    async def notify(self, cause: CloudEvent, notice: Notice) -> int:
        """Deliver one notice to all its recipients, batch by batch; returns how many members."""
        total = 0
        written: list[str] = []
        async for batch in self._recipients(notice):
            docs = [d for d in batch if d["_id"] not in notice.exclude]
            written += await self.deliver(
                [(cause, notice.message, d) for d in docs], announce=False
            )
            total += len(docs)
        # Announced once the whole audience is written: publishing meanwhile would only
        # compete with the remaining batches for the same database.
        self.announcer.announce(written)
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

    async def deliver(
        self, items: list[tuple[CloudEvent, Message, dict[str, Any]]], announce: bool = True
    ) -> list[str]:
        """Plan, spend budgets and write the deliveries of many (cause, message, member) at once:
        a few round trips for the whole batch, never one per recipient."""
        now = self.clock.now()
        planned: list[tuple[CloudEvent, Message, Recipient, Plan]] = []
        for cause, message, doc in items:
            try:
                member = Recipient.from_doc(doc)
                plan = domain.plan(message, member, now, self.available)
            except Exception as exc:
                # One projection that cannot be read (hand-edited, an old version) must not
                # stop a campaign's announcement to everyone else: skipped, logged, counted.
                self._skip(doc, exc)
                continue
            if plan is not None:
                planned.append((cause, message, member, plan))
        planned = await self._spend_budgets(planned, now)

        docs: list[dict[str, Any]] = []
        digests: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
        for cause, message, member, plan in planned:
            docs.append(
                inapp_delivery(base_delivery(cause, message, member, "inapp", now), cause, now)
            )
            if not plan.route:
                continue
            if plan.digest_day is not None:
                digests.append(self._digest_entry(cause, message, member, plan, now))
                continue
            push = base_delivery(cause, message, member, plan.route[0], now)
            docs.append(
                {
                    **push,
                    "status": "deferred" if plan.deferred else "pending",
                    "deferred": plan.deferred,
                    "due_ms": epoch_ms(plan.due),
                    "route": list(plan.route),
                    "tried": [],
                }
            )
        new_ids = await self.store.insert_deliveries(docs)
        await self._add_to_digests(digests, now)
        new = set(new_ids)
        inapp_ids = [d["_id"] for d in docs if d["channel"] == "inapp" and d["_id"] in new]
        self._count("inapp", "sent", len(inapp_ids))
        if announce:
            self.announcer.announce(inapp_ids)
        if len(new_ids) > len(inapp_ids) or digests:
            self.wake_dispatcher()
        return inapp_ids

    async def _spend_budgets(
        self, planned: list[tuple[CloudEvent, Message, Recipient, Plan]], now: datetime
    ) -> list[tuple[CloudEvent, Message, Recipient, Plan]]:
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

    def _digest_entry(
        self,
        cause: CloudEvent,
        message: Message,
        member: Recipient,
        plan: Plan,
        now: datetime,
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        day = plan.digest_day
        assert day is not None
        digest = domain.digest_cause(member.member_id, day)
        doc = {
            "_id": domain.delivery_id(digest, member.member_id, plan.route[0]),
            "member_id": member.member_id,
            "channel": plan.route[0],
            "template": "digest",
            "category": message.category,
            "locale": member.locale,
            "context": {},
            "mentions": {},
            "cause_event_id": digest,
            "cause_type": "digest",
            "correlation_id": digest,
            "created_at": now,
            "created_ms": epoch_ms(now),
            "attempts": 0,
            "status": "deferred",
            "deferred": "digest",
            "due_ms": epoch_ms(plan.due),
            "route": list(plan.route),
            "tried": [],
            "digest_day": day.isoformat(),
        }
        return doc, cause.id, {**message_parts(message), "at_ms": epoch_ms(now)}

    async def _add_to_digests(
        self, entries: list[tuple[dict[str, Any], str, dict[str, Any]]], now: datetime
    ) -> None:
        """A digest already on its way takes nothing more: the item joins the next day's."""
        for _ in range(3):
            if not entries:
                return
            late = await self.store.add_to_digests(entries)
            entries = [self._next_day(entries[i]) for i in sorted(late)]
        if entries:
            log.warning("%d digest item(s) found no open digest", len(entries))

    @staticmethod
    def _next_day(
        entry: tuple[dict[str, Any], str, dict[str, Any]],
    ) -> tuple[dict[str, Any], str, dict[str, Any]]:
        doc, key, item = entry
        day = datetime.fromisoformat(doc["digest_day"]).date() + timedelta(days=1)
        digest = domain.digest_cause(doc["member_id"], day)
        moved = {
            **doc,
            "_id": domain.delivery_id(digest, doc["member_id"], doc["channel"]),
            "cause_event_id": digest,
            "correlation_id": digest,
            "digest_day": day.isoformat(),
            "due_ms": doc["due_ms"] + 24 * 3600 * 1000,
        }
        return moved, key, item
