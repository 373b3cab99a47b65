"""Delivery workers: claim due deliveries from MongoDB, send, retry with backoff, fall back.

Every replica runs one dispatcher; claims are atomic per document, so replicas share the
queue without a coordinator (see docs/notifier.md, "Why a MongoDB claim-based queue").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import traceback
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.notifier import domain
from services.notifier.channels import Channel, Failed, Outgoing, Retry, Sent
from services.notifier.domain import Recipient
from services.notifier.fanout import Announcer, Clock
from services.notifier.store import NotifierStore
from services.notifier.texts import delivery_text, mentioned
from services.notifier.timing import hour_slot, quiet_until, retry_delay
from shared.events import NotificationFailed, NotificationSent, new_event
from shared.jobs import INSTANCE_ID
from shared.logs import redact
from shared.metrics import Metrics
from shared.outbox import update_with_outbox
from shared.store import epoch_ms

log = logging.getLogger("sarafan.notifier.dispatch")

#: Stored and logged errors are bounded: a peer may answer with anything.
ERROR_MAX = 500


def scrub(error: str, member: Recipient | None) -> str:
    """A channel's error as it may be stored, published and logged: without the member's
    addresses (a bounce quotes the mailbox, a peer may echo the chat), nor anything the log
    redaction would hide (other addresses, tokens), and bounded.

    The member's own contacts are replaced first and exactly, whatever their form, since the
    general patterns cannot know every shape an address takes.
    """
    if member is not None:
        for address in sorted(
            (a.strip() for a in member.contacts.values() if a and a.strip()), key=len, reverse=True
        ):
            for form in {address, address.lstrip("@")}:
                if len(form) >= 3:
                    error = error.replace(form, "<address>")
    return redact(error)[:ERROR_MAX]


def _failure(exc: BaseException) -> str:
    """An unexpected exception as stored and logged: its type and where it was raised, not its
    message, which may quote what it choked on (a name, an address, a text)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(exc).__name__}{where}"


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
        # The recipients and the members their texts name, in one read by primary key.
        members = await self.store.members_by_id(
            {*(d["member_id"] for d in claimed), *mentioned(claimed)}
        )
        names = {k: str(v.get("display_name") or "") for k, v in members.items()}
        within_rate = await self._rate_allowance(claimed, members, self.clock.now())
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def attempt(delivery: dict[str, Any]) -> None:
            async with gate:
                member = members.get(delivery["member_id"])
                try:
                    await self.attempt(
                        delivery, member, token, delivery["_id"] in within_rate, names
                    )
                except Exception as exc:
                    # Never left `sending` to be claimed again for ever: it counts as a
                    # failed attempt (retried with backoff, failed after the last one).
                    log.warning("attempt of %s failed: %s", delivery["_id"], _failure(exc))
                    await self._unexpected(delivery, member, token, exc)

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
            try:
                member = Recipient.from_doc(doc) if doc else None
                if member is None or self._blocker(delivery, member, now) is not None:
                    continue
            except Exception:  # an unreadable projection: its attempt says so, the rest go on
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
        names: dict[str, str] | None = None,
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
        try:
            title, body = self._text(delivery, member, names or {})
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
        except Exception as exc:
            # A text or a channel that raises (a bug, a name no header takes) is a failed
            # attempt like a peer's refusal: retried with backoff, then the fallback and
            # notification-failed; never a delivery stuck in `sending`.
            outcome = Retry(_failure(exc))
            log.warning("%s to %s: %s", name, member.member_id, outcome.error)
        if not isinstance(outcome, Sent):
            outcome = replace(outcome, error=scrub(outcome.error, member))
        attempts = int(delivery.get("attempts", 0)) + 1
        if isinstance(outcome, Sent):
            await self._sent(delivery, token, attempts, now)
        elif isinstance(outcome, Retry) and attempts < self.settings.max_attempts:
            await self._retry(delivery, token, outcome.error, attempts, now, outcome.after)
        else:
            assert isinstance(outcome, Retry | Failed)
            dead = isinstance(outcome, Failed) and outcome.contact_dead
            await self._failed(delivery, member, token, outcome.error, attempts, now, dead)

    def _text(
        self, delivery: dict[str, Any], member: Recipient, names: dict[str, str]
    ) -> tuple[str, str]:
        """Rendered now, with the names the projection has now (texts.py); a digest in the
        member's locale of today."""
        locale = member.locale if delivery["template"] == "digest" else None
        return delivery_text(delivery, member.display_name, names, locale)

    async def _unexpected(
        self,
        delivery: dict[str, Any],
        member_doc: dict[str, Any] | None,
        token: str,
        exc: BaseException,
    ) -> None:
        """An attempt that raised outside the channel (an unreadable projection, a bug): a
        failed attempt all the same, retried with backoff and failed after the last one (with
        notification-failed; no fallback, since the member could not be read)."""
        try:
            member = Recipient.from_doc(member_doc) if member_doc else None
        except Exception:
            member = None
        now = self.clock.now()
        error = scrub(_failure(exc), member)
        attempts = int(delivery.get("attempts", 0)) + 1
        try:
            if attempts < self.settings.max_attempts:
                await self._retry(delivery, token, error, attempts, now)
            else:
                await self._failed(delivery, None, token, error, attempts, now)
        except Exception as again:  # the database is away: the lease brings it back
            log.warning("recording the failed attempt of %s failed: %r", delivery["_id"], again)

    async def _retry(
        self,
        delivery: dict[str, Any],
        token: str,
        error: str,
        attempts: int,
        now: datetime,
        after: float | None = None,
    ) -> None:
        """Due again after the backoff (never before the peer's own `after`)."""
        delay = retry_delay(
            attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds, after
        )
        await self.store.finish(
            delivery["_id"],
            token,
            {
                "$set": {
                    "status": "pending",
                    "due_ms": epoch_ms(now) + int(delay * 1000),
                    "last_error": error,
                    "attempts": attempts,
                }
            },
        )
        self._count(delivery["channel"], "retry")
        log.info(
            "%s to %s: %s; retry %d in %.1fs",
            delivery["channel"],
            delivery["member_id"],
            error,
            attempts,
            delay,
        )

    async def _defer(self, delivery: dict[str, Any], token: str, until: datetime, why: str) -> None:
        await self.store.finish(
            delivery["_id"],
            token,
            {"$set": {"status": "deferred", "deferred": why, "due_ms": epoch_ms(until)}},
        )
        self._count(delivery["channel"], "deferred")

    async def _sent(
        self, delivery: dict[str, Any], token: str, attempts: int, now: datetime
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
                        # No rendered text is kept: the inbox and the log render it when
                        # read, so a member named in it and erased later is named nowhere.
                        "delivered_ms": epoch_ms(now),
                        "attempts": attempts,
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
        member: Recipient | None,
        token: str,
        error: str,
        attempts: int,
        now: datetime,
        contact_dead: bool = False,
    ) -> None:
        """notification-failed for this channel, then the member's next channel takes over
        (none when the member's projection could not be read: `member` is None)."""
        channel = delivery["channel"]
        event = new_event(
            NotificationFailed(
                notification_id=delivery["_id"],
                member_id=delivery["member_id"],
                channel=channel,
                error=error[:500],
                attempts=max(attempts, 1),
            ),
            correlation_id=delivery.get("correlation_id"),
        )
        if contact_dead and member is not None:
            await self.store.block_channel(member.member_id, channel, now)
            member = replace(member, blocked=member.blocked | {channel})
        # The fallback first: if we crash in between, the claim is retried and the
        # deterministic id keeps the fallback single.
        tried = [*delivery.get("tried", []), channel]
        following = (
            domain.next_channel(delivery.get("route", []), tried, member, self.available)
            if member is not None
            else None
        )
        if member is not None and following is not None:
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
                delivery["member_id"],
                error,
                f"; falling back to {following}" if following else "",
            )
        if following is not None:
            self.wake()
