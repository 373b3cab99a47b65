"""Delivery workers: claim due deliveries from MongoDB, send, retry with backoff, fall back.

Every replica runs one dispatcher; claims are atomic per document, so replicas share the
queue without a coordinator (see docs/notifier.md, "Why a MongoDB claim-based queue").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from services.notifier import domain
from services.notifier.channels import Channel, Failed, Outgoing, Retry, Sent
from services.notifier.domain import Recipient
from services.notifier.fanout import Announcer, Clock
from services.notifier.store import NotifierStore
from services.notifier.templates import render
from services.notifier.timing import hour_slot, quiet_until, retry_delay
from shared.events import NotificationFailed, NotificationSent, new_event
from shared.jobs import INSTANCE_ID
from shared.metrics import Metrics
from shared.outbox import update_with_outbox
from shared.store import epoch_ms

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


class Dispatcher:
    def __init__(
        self,
        store: NotifierStore,
        channels: dict[str, Channel],
        settings: DispatchSettings,
        metrics: Metrics,
        clock: Clock,
        announcer: Announcer,
    ) -> None:
        self.store = store
        self.channels = channels
        self.available = frozenset(channels)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.announcer = announcer
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and attempt each; returns how many were claimed."""
        token = f"{INSTANCE_ID}:{uuid.uuid4().hex[:12]}"
        claimed = await self.store.claim_due(
            self.clock.now(), self.settings.claim_batch, self.settings.lease, token
        )
        if not claimed:
            return 0
        members = await self.store.members_by_id(d["member_id"] for d in claimed)
        within_rate = await self._rate_allowance(claimed, members, self.clock.now())
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def attempt(delivery: dict[str, Any]) -> None:
            async with gate:
                try:
                    await self.attempt(
                        delivery,
                        members.get(delivery["member_id"]),
                        token,
                        delivery["_id"] in within_rate,
                    )
                except Exception:
                    # Its lease runs out and it is claimed again: nothing is lost.
                    log.exception("attempt of %s failed unexpectedly", delivery["_id"])

        await asyncio.gather(*(attempt(d) for d in claimed))
        return len(claimed)

    def _blocker(
        self, delivery: dict[str, Any], member: Recipient | None, now: datetime
    ) -> str | None:
        """Why this delivery cannot be sent right now, apart from the rate limit."""
        if member is None or not member.active:
            return "member-left"
        name = delivery["channel"]
        if name not in self.channels or name in member.blocked or member.contact(name) is None:
            return "channel-unusable"
        if quiet_until(now, member.timezone, member.preferences.quiet()) is not None:
            return "quiet-hours"
        return None

    async def _rate_allowance(
        self, claimed: list[dict[str, Any]], members: dict[str, dict[str, Any]], now: datetime
    ) -> set[str]:
        """Ids of the claimed deliveries within their member's hourly rate limit, decided for
        the whole batch in one bulk write. Counted per message: a fallback is not a second one."""
        allowed: set[str] = set()
        limited: list[tuple[str, int, tuple[str, str, str]]] = []
        slot, next_window = hour_slot(now)
        for delivery in claimed:
            doc = members.get(delivery["member_id"])
            member = Recipient.from_doc(doc) if doc else None
            if member is None or self._blocker(delivery, member, now) is not None:
                continue
            limit = member.preferences.rate_limit_per_hour
            if limit is None or delivery["category"] in domain.URGENT_CATEGORIES:
                allowed.add(delivery["_id"])
            else:
                limited.append(
                    (
                        delivery["_id"],
                        limit,
                        (
                            f"{member.member_id}:{slot}",
                            member.member_id,
                            delivery["cause_event_id"],
                        ),
                    )
                )
        for limit in {lim for _, lim, _ in limited}:
            batch = [(i, entry) for i, lim, entry in limited if lim == limit]
            ok = await self.store.spend(
                "rates", [e for _, e in batch], limit, next_window + timedelta(hours=1)
            )
            allowed |= {batch[k][0] for k in ok}
        return allowed

    async def attempt(
        self,
        delivery: dict[str, Any],
        member_doc: dict[str, Any] | None,
        token: str,
        within_rate: bool,
    ) -> None:
        now = self.clock.now()
        member = Recipient.from_doc(member_doc) if member_doc else None
        blocker = self._blocker(delivery, member, now)
        if member is None or blocker == "member-left":
            await self.store.finish(
                delivery["_id"],
                token,
                {"$set": {"status": "cancelled", "last_error": "member left"}},
            )
            return
        name = delivery["channel"]
        if blocker == "channel-unusable":
            why = "channel is off" if name not in self.channels else f"no usable {name} address"
            await self._failed(delivery, member, token, why, delivery.get("attempts", 0), now)
            return
        if blocker == "quiet-hours":  # they began since it was planned: wait, do not drop
            later = quiet_until(now, member.timezone, member.preferences.quiet())
            await self._defer(delivery, token, later or now, "quiet-hours")
            return
        if not within_rate:
            _, next_window = hour_slot(now)
            await self._defer(
                delivery,
                token,
                next_window + timedelta(seconds=random.uniform(0, 60)),
                "rate-limit",
            )
            return
        channel = self.channels[name]
        address = member.contact(name)
        assert address is not None
        title, body = self._text(delivery, member)
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
            )
        )
        attempts = int(delivery.get("attempts", 0)) + 1
        if isinstance(outcome, Sent):
            await self._sent(delivery, token, attempts, title, body, now)
        elif isinstance(outcome, Retry) and attempts < self.settings.max_attempts:
            delay = retry_delay(
                attempts,
                self.settings.retry_base_seconds,
                self.settings.retry_max_seconds,
                outcome.after,
            )
            await self.store.finish(
                delivery["_id"],
                token,
                {
                    "$set": {
                        "status": "pending",
                        "due_ms": epoch_ms(now) + int(delay * 1000),
                        "last_error": outcome.error,
                        "attempts": attempts,
                    }
                },
            )
            self._count(name, "retry")
            log.info(
                "%s to %s: %s; retry %d in %.1fs",
                name,
                member.member_id,
                outcome.error,
                attempts,
                delay,
            )
        else:
            assert isinstance(outcome, Retry | Failed)
            dead = isinstance(outcome, Failed) and outcome.contact_dead
            await self._failed(delivery, member, token, outcome.error, attempts, now, dead)

    def _text(self, delivery: dict[str, Any], member: Recipient) -> tuple[str, str]:
        if delivery["template"] != "digest":
            return delivery["title"], delivery["body"]
        items = sorted((delivery.get("items") or {}).values(), key=lambda i: i.get("at_ms", 0))
        return render("digest", member.locale, {"name": member.display_name, "items": items})

    async def _defer(self, delivery: dict[str, Any], token: str, until: datetime, why: str) -> None:
        await self.store.finish(
            delivery["_id"],
            token,
            {"$set": {"status": "deferred", "deferred": why, "due_ms": epoch_ms(until)}},
        )
        self._count(delivery["channel"], "deferred")

    async def _sent(
        self,
        delivery: dict[str, Any],
        token: str,
        attempts: int,
        title: str,
        body: str,
        now: datetime,
    ) -> None:
        event = new_event(
            NotificationSent(
                notification_id=delivery["_id"],
                member_id=delivery["member_id"],
                channel=delivery["channel"],
                template=delivery["template"],
                cause_event_id=delivery["cause_event_id"],
            ),
            correlation_id=delivery.get("correlation_id"),
        )
        done = await self.store.finish(
            delivery["_id"],
            token,
            update_with_outbox(
                {
                    "$set": {
                        "status": "delivered",
                        "delivered_ms": epoch_ms(now),
                        "attempts": attempts,
                        "title": title,
                        "body": body,
                        "last_error": None,
                    }
                },
                [event],
            ),
        )
        if done:
            self._count(delivery["channel"], "sent")
            self.announcer.announce([delivery["_id"]])

    async def _failed(
        self,
        delivery: dict[str, Any],
        member: Recipient,
        token: str,
        error: str,
        attempts: int,
        now: datetime,
        contact_dead: bool = False,
    ) -> None:
        """notification-failed for this channel, then the member's next channel takes over."""
        channel = delivery["channel"]
        event = new_event(
            NotificationFailed(
                notification_id=delivery["_id"],
                member_id=member.member_id,
                channel=channel,
                error=error[:500],
                attempts=max(attempts, 1),
            ),
            correlation_id=delivery.get("correlation_id"),
        )
        if contact_dead:
            await self.store.block_channel(member.member_id, channel, now)
            member = replace(member, blocked=member.blocked | {channel})
        # The fallback first: if we crash in between, the claim is retried and the
        # deterministic id keeps the fallback single.
        tried = [*delivery.get("tried", []), channel]
        following = domain.next_channel(delivery.get("route", []), tried, member, self.available)
        if following is not None:
            due = quiet_until(now, member.timezone, member.preferences.quiet()) or now
            fallback = {
                k: v
                for k, v in delivery.items()
                if k
                not in ("_id", "claim", "outbox", "outbox_pending", "last_error", "delivered_ms")
            }
            fallback.update(
                {
                    "_id": domain.delivery_id(
                        delivery["cause_event_id"], member.member_id, following
                    ),
                    "channel": following,
                    "status": "pending",
                    "attempts": 0,
                    "tried": tried,
                    "due_ms": epoch_ms(due),
                    "deferred": None,
                    "fallback_from": delivery["_id"],
                    "created_at": now,
                    "created_ms": epoch_ms(now),
                }
            )
            await self.store.insert_deliveries([fallback])
        done = await self.store.finish(
            delivery["_id"],
            token,
            update_with_outbox(
                {
                    "$set": {
                        "status": "failed",
                        "last_error": error,
                        "attempts": attempts,
                        "failed_ms": epoch_ms(now),
                        "fallback": following,
                    }
                },
                [event],
            ),
        )
        if done:
            self._count(channel, "failed")
            self.announcer.announce([delivery["_id"]])
            log.warning(
                "%s to %s failed for good (%s)%s",
                channel,
                member.member_id,
                error,
                f"; falling back to {following}" if following else "",
            )
        if following is not None:
            self.wake()
