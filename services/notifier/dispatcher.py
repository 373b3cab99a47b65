"""Delivery workers: claim due deliveries from MongoDB, send, retry with backoff, fall back.

Every replica runs one dispatcher; claims are atomic per document, so replicas share the
queue without a coordinator (see docs/notifier.md, "Why a MongoDB claim-based queue"). What an
attempt changes in a delivery, and the events it raises, is decided in `deliveries.py`; the
outcomes of one claimed batch are written a group at a time (`outcomes.py`) in one unit of work,
each group's commit handing its notification-sent and notification-failed events to the relay.
Sends are paced by each channel's limits (`pacing.py`), not by the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.notifier import deliveries, domain
from services.notifier.channels import Channel, Failed, Outcome, Outgoing, Retry, Sent
from services.notifier.domain import Recipient
from services.notifier.outcomes import Outcomes
from services.notifier.pacing import Pace, Pacing
from services.notifier.send_errors import failure, scrub
from services.notifier.store import NotifierStore, NotifierUnitOfWork
from services.notifier.texts import delivery_text, mentioned
from services.notifier.timing import hour_slot, quiet_until, retry_delay
from shared import tracing
from shared.clock import Clock, epoch_ms, woken_or_timeout
from shared.documents import Doc
from shared.jobs import INSTANCE_ID
from shared.metrics import Metrics

log = logging.getLogger("sarafan.notifier.dispatch")


@dataclass(frozen=True)
class DispatchSettings:
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    poll_seconds: float
    claim_batch: int
    concurrency: int
    lease: timedelta
    #: Each push channel's pace (concurrent sends, sends a second); a channel without is held
    #: only by `concurrency`.
    paces: dict[str, Pace] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        store: NotifierStore,
        unit_of_work: Callable[[], NotifierUnitOfWork],
        channels: dict[str, Channel],
        settings: DispatchSettings,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.channels = channels
        self.available = frozenset(channels)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.pacing = Pacing(settings.paces)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something became due now (a fan-out, a fallback): look without waiting for the poll."""
        self._wake.set()

    def _count(self, channel: str, outcome: str) -> None:
        self.metrics.notifications.labels(self.metrics.service, channel, outcome).inc()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatch round failed: %r; retrying", exc)
                claimed = 0
            if claimed < self.settings.claim_batch:
                await woken_or_timeout(self._wake, self.settings.poll_seconds)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and attempt each; returns how many were claimed."""
        token = f"{INSTANCE_ID}:{uuid.uuid4().hex[:12]}"
        claimed = await self.store.claim_due(
            self.clock(), self.settings.claim_batch, self.settings.lease, token
        )
        if not claimed:
            return 0
        # The recipients and the members their texts name, in one read by primary key.
        members = await self.store.members_by_id(
            {*(d["member_id"] for d in claimed), *mentioned(claimed)}
        )
        names = {k: str(v.get("display_name") or "") for k, v in members.items()}
        within_rate = await self._rate_allowance(claimed, members, self.clock())
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def attempt(out: Outcomes, delivery: Doc) -> None:
            async with gate:
                member = members.get(delivery["member_id"])
                allowed = delivery["_id"] in within_rate
                try:
                    await self.attempt(out, delivery, member, allowed, names)
                except Exception as exc:
                    # Never left `sending` to be claimed again for ever: it counts as a
                    # failed attempt (retried with backoff, failed after the last one).
                    log.warning("attempt of %s failed: %s", delivery["_id"], failure(exc))
                    await self._unexpected(out, delivery, member, exc)

        async with self.unit_of_work() as uow:
            out = Outcomes(self.store, uow, token)
            await asyncio.gather(*(attempt(out, d) for d in claimed))
            await out.flush()
        return len(claimed)

    def _rate_entry(
        self, delivery: Doc, doc: Doc | None, now: datetime, slot: str
    ) -> tuple[int | None, tuple[str, str, str]] | None:
        """The member's hourly limit and the window entry this delivery spends (limit None:
        not limited); None when it will not be sent now anyway."""
        try:
            member = Recipient.from_doc(doc) if doc else None
            if deliveries.blocker(delivery["channel"], member, now, self.available) is not None:
                return None
        except Exception:  # an unreadable projection: its attempt says so, the rest go on
            return None
        assert member is not None
        limit = member.preferences.rate_limit_per_hour
        if delivery["category"] in domain.URGENT_CATEGORIES:
            limit = None
        return limit, (f"{member.member_id}:{slot}", member.member_id, delivery["cause_event_id"])

    async def _rate_allowance(
        self, claimed: list[Doc], members: dict[str, Doc], now: datetime
    ) -> set[str]:
        """Ids of the claimed deliveries within their member's hourly rate limit, decided for
        the whole batch in one bulk write. Counted per message: a fallback is not a second one."""
        allowed: set[str] = set()
        limited: list[tuple[str, int, tuple[str, str, str]]] = []
        slot, next_window = hour_slot(now)
        for delivery in claimed:
            found = self._rate_entry(delivery, members.get(delivery["member_id"]), now, slot)
            if found is None:
                continue
            limit, entry = found
            if limit is None:
                allowed.add(delivery["_id"])
            else:
                limited.append((delivery["_id"], limit, entry))
        for limit in {lim for _, lim, _ in limited}:
            batch = [(i, entry) for i, lim, entry in limited if lim == limit]
            ok = await self.store.spend(
                "rates", [e for _, e in batch], limit, next_window + timedelta(hours=1)
            )
            allowed |= {batch[k][0] for k in ok}
        return allowed

    async def attempt(
        self,
        out: Outcomes,
        delivery: Doc,
        member_doc: Doc | None,
        within_rate: bool,
        names: dict[str, str] | None = None,
    ) -> None:
        now = self.clock()
        member = Recipient.from_doc(member_doc) if member_doc else None
        blocked = deliveries.blocker(delivery["channel"], member, now, self.available)
        if member is None or blocked == "member-left":
            await out.record(delivery["_id"], deliveries.cancelled())
        elif deliveries.expired(delivery, now):
            await self._expire(out, delivery)
        elif blocked is not None or not within_rate:
            await self._hold(out, delivery, member, blocked, now)
        else:
            # In the trace of the delivery's cause (kept in the document), if traced.
            with tracing.continued(delivery):
                outcome = await self._traced_send(delivery, member, names or {})
                if outcome is not None:
                    await self._record(out, delivery, member, outcome, now)

    async def _hold(
        self, out: Outcomes, delivery: Doc, member: Recipient, blocked: str | None, now: datetime
    ) -> None:
        """Not sent now: an unusable channel fails (the next one takes over), quiet hours that
        began since it was planned and the rate limit make it wait (never dropped)."""
        name = delivery["channel"]
        if blocked == "channel-unusable":
            why = "channel is off" if name not in self.channels else f"no usable {name} address"
            await self._failed(out, delivery, member, why, delivery.get("attempts", 0), now)
        elif blocked == "quiet-hours":
            later = quiet_until(now, member.timezone, member.preferences.quiet())
            await self._defer(out, delivery, later or now, "quiet-hours")
        else:
            _, next_window = hour_slot(now)
            later = next_window + timedelta(seconds=random.uniform(0, 60))
            await self._defer(out, delivery, later, "rate-limit")

    async def _traced_send(
        self, delivery: Doc, member: Recipient, names: dict[str, str]
    ) -> Outcome | None:
        """`_send` in a client span: the channel, the delivery, the attempt, how it went. None:
        not sent, its claim's lease ran out while it waited for its channel's pace."""
        attributes = {
            "sarafan.notification_id": delivery["_id"],
            "sarafan.template": delivery["template"],
            "sarafan.attempt": int(delivery.get("attempts", 0)) + 1,
        }
        with tracing.sending("notifier", delivery["channel"], attributes=attributes) as span:
            async with self.pacing.slot(delivery["channel"]):
                if self._lapsed(delivery):
                    span.outcome("lapsed")
                    return None
                outcome = await self._send(delivery, member, names)
            span.outcome(type(outcome).__name__.lower())
            if not isinstance(outcome, Sent):
                span.failed(outcome.error)
        return outcome

    def _lapsed(self, delivery: Doc) -> bool:
        """Whether the claim's lease (`due_ms` while claimed) ends within a quarter of a lease:
        a send that waited that long for its channel is left to the next claim (never sent by
        two workers at once)."""
        margin = self.settings.lease.total_seconds() * 250
        if epoch_ms(self.clock()) + margin < int(delivery.get("due_ms") or 0):
            return False
        log.info("%s waited past its claim for its channel: left to the next", delivery["_id"])
        return True

    async def _send(self, delivery: Doc, member: Recipient, names: dict[str, str]) -> Outcome:
        name = delivery["channel"]
        channel = self.channels[name]
        address = member.contact(name)
        assert address is not None
        try:
            title, body = self._text(delivery, member, names)
            outcome = await channel.send(
                Outgoing(
                    delivery_id=delivery["_id"],
                    member_id=member.member_id,
                    address=address,
                    template=delivery["template"],
                    category=delivery["category"],
                    locale=member.locale,
                    title=title,
                    body=body,
                    cause_event_id=delivery["cause_event_id"],
                    data=dict(delivery.get("data") or {}),
                    marketing=deliveries.is_marketing(delivery),
                )
            )
        except Exception as exc:
            # A text or a channel that raises (a bug, a name no header takes) is a failed
            # attempt like a peer's refusal: retried with backoff, then the fallback and
            # notification-failed; never a delivery stuck in `sending`.
            outcome = Retry(failure(exc))
            log.warning("%s to %s: %s", name, member.member_id, outcome.error)
        if isinstance(outcome, Sent):
            return outcome
        return replace(outcome, error=scrub(outcome.error, member))

    def _text(self, delivery: Doc, member: Recipient, names: dict[str, str]) -> tuple[str, str]:
        """Rendered now, with the names the projection has now (texts.py); a digest in the
        member's locale of today."""
        locale = member.locale if delivery["template"] == "digest" else None
        return delivery_text(delivery, member.display_name, names, locale)

    async def _record(
        self, out: Outcomes, delivery: Doc, member: Recipient, outcome: Outcome, now: datetime
    ) -> None:
        attempts = int(delivery.get("attempts", 0)) + 1
        if isinstance(outcome, Sent):
            fields, events = deliveries.sent(delivery, attempts, now)
            await out.record(delivery["_id"], fields, events)
            self._count(delivery["channel"], "sent")
        elif isinstance(outcome, Retry) and attempts < self.settings.max_attempts:
            await self._retry(out, delivery, outcome.error, attempts, now, outcome.after)
        else:
            dead = isinstance(outcome, Failed) and outcome.contact_dead
            await self._failed(out, delivery, member, outcome.error, attempts, now, dead)

    async def _unexpected(
        self, out: Outcomes, delivery: Doc, member_doc: Doc | None, exc: BaseException
    ) -> None:
        """An attempt that raised outside the channel (an unreadable projection, a bug): a
        failed attempt all the same, retried with backoff and failed after the last one (with
        notification-failed; no fallback, since the member could not be read)."""
        try:
            member = Recipient.from_doc(member_doc) if member_doc else None
        except Exception:
            member = None
        now = self.clock()
        error = scrub(failure(exc), member)
        attempts = int(delivery.get("attempts", 0)) + 1
        try:
            if attempts < self.settings.max_attempts:
                await self._retry(out, delivery, error, attempts, now)
            else:
                await self._failed(out, delivery, None, error, attempts, now)
        except Exception as again:  # the database is away: the lease brings it back
            log.warning("recording the failed attempt of %s failed: %r", delivery["_id"], again)

    async def _retry(
        self,
        out: Outcomes,
        delivery: Doc,
        error: str,
        attempts: int,
        now: datetime,
        after: float | None = None,
    ) -> None:
        """Due again after the backoff (never before the peer's own `after`)."""
        s = self.settings
        delay = retry_delay(attempts, s.retry_base_seconds, s.retry_max_seconds, after)
        await out.record(delivery["_id"], deliveries.retry(error, attempts, now, delay))
        self._count(delivery["channel"], "retry")
        channel, member_id = delivery["channel"], delivery["member_id"]
        log.info("%s to %s: %s; retry %d in %.1fs", channel, member_id, error, attempts, delay)

    async def _defer(self, out: Outcomes, delivery: Doc, until: datetime, why: str) -> None:
        if deliveries.expired(delivery, until):
            # It would go after its deadline (a reminder after the shift's start): not at all.
            await self._expire(out, delivery)
            return
        await out.record(delivery["_id"], deliveries.deferred(until, why))
        self._count(delivery["channel"], "deferred")

    async def _expire(self, out: Outcomes, delivery: Doc) -> None:
        fields = deliveries.cancelled("expired: its deadline passed before it could be sent")
        await out.record(delivery["_id"], fields)
        self._count(delivery["channel"], "expired")

    async def _failed(
        self,
        out: Outcomes,
        delivery: Doc,
        member: Recipient | None,
        error: str,
        attempts: int,
        now: datetime,
        contact_dead: bool = False,
    ) -> None:
        """notification-failed for this channel, then the member's next channel takes over
        (none when the member's projection could not be read: `member` is None)."""
        channel = delivery["channel"]
        if contact_dead and member is not None:
            await out.write_now(out.uow.members.block_channel(member.member_id, channel, now))
            member = replace(member, blocked=member.blocked | {channel})
        way = deliveries.fallback_channel(delivery, member, self.available)
        if member is not None and way.channel is not None:
            # The fallback first: if we crash in between, the claim is retried and the
            # deterministic id keeps the fallback single.
            fallback = deliveries.fallback(delivery, member, way, now)
            await out.write_now(out.uow.deliveries.insert([fallback]))
        fields, events = deliveries.failed(delivery, error, attempts, now, way.channel)
        await out.record(delivery["_id"], fields, events)
        self._count(channel, "failed")
        then = f"; falling back to {way.channel}" if way.channel else ""
        log.warning("%s to %s failed for good (%s)%s", channel, delivery["member_id"], error, then)
        if way.channel is not None:
            self.wake()
