"""Erasing an erased member's messages from the MEMBERS stream, even if NATS was away.

An erasure is recorded in MongoDB first (the tombstone carries `purge`), so it survives a
NATS outage or a crash; this module finishes it in two steps, retried until done:

1. `purge: pending` — once nothing naming the member is left to publish (their own pending
   events, and referral-made events pending in the documents of members they referred),
   erase every message on `members.<type>.<member_id>` except member-left. Personal data
   leaves the stream now.
2. `purge: member-left` — member-left (no personal data) must still reach the other
   services, who erase their own copies on it. Once every durable consumer of MEMBERS whose
   filter takes it has acknowledged it, erase `members.*.<member_id>`, then the member's
   dead letters from DLQ (every service's copies of messages whose subject names them);
   the marker goes.

Each message is securely deleted (the bus's `erase`): JetStream overwrites its bytes in the
store, where a purge would only drop it from the index and leave the bytes in the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.members.store import MemberStore
from shared.bus import Bus
from shared.clock import woken_or_timeout
from shared.events import EVENT_MODELS
from shared.retry import Backoff, retry
from shared.topology import DLQ_STREAM, STREAMS

log = logging.getLogger("sarafan.members.erasure")


class NotFinished(Exception):
    """An erasure that still has a step to go (tried again)."""


STREAM = STREAMS["members"]
LEFT = "member-left"
#: Subjects erased at step 1: every event type this service publishes except member-left.
STEP_ONE_TYPES = tuple(
    m.event_type for m in EVENT_MODELS if m.service == "members" and m.event_type != LEFT
)


def dead_letters_of(member_id: str) -> str:
    """The DLQ subjects of a member's messages: `dlq.<service>.<consumer>.` and then the
    original `<service>.<type>.<aggregate id>`, whose last token is the member's id."""
    return f"dlq.*.*.*.*.{member_id}"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` is one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def consumer_is_past(info: Any, subject: str, seq: int) -> bool:
    """Has this consumer of the stream done with message `seq` on `subject` (or skip it)?"""
    config = info.config
    filters = config.filter_subjects or (
        [config.filter_subject] if config.filter_subject else [">"]
    )
    if not any(subject_matches(f, subject) for f in filters):
        return True  # it never receives that subject
    if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq:
        return True
    # Nothing left to deliver and nothing unacknowledged: it has had every message it takes.
    return not info.num_pending and not info.num_ack_pending


class Eraser:
    """Finishes erasures: right after the DELETE, and from a periodic sweep."""

    def __init__(
        self,
        store: MemberStore,
        bus: Bus,
        publish_pending: Callable[[str, Any], Awaitable[object]],
        interval: float,
    ) -> None:
        self.store = store
        self.bus = bus
        #: Publishes a document's pending events now (the relay's flush: collection, id).
        self.publish_pending = publish_pending
        self.interval = interval
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def wake(self) -> None:
        self._wake.set()

    def kick(self, member_id: str) -> None:
        """Try at once (the usual case: NATS is up and the relay publishes within ms)."""
        task = asyncio.create_task(self._soon(member_id), name=f"erase-{member_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _soon(self, member_id: str) -> None:

        async def finished() -> None:
            if not await self.finish(member_id):
                raise NotFinished(member_id)

        # Not finished after these (NATS away, a consumer behind): the periodic sweep carries on.
        with contextlib.suppress(Exception):
            await retry(
                finished,
                what=f"erasing {member_id}'s messages",
                backoff=Backoff(0.05, 1.0),
                attempts=10,
                level=logging.DEBUG,
            )

    async def loop(self) -> None:
        """Runtime job: finish every erasure still marked, every `interval` or on reconnect."""
        try:
            while True:
                try:
                    await self.sweep()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("erasure sweep failed: %r", exc)
                await woken_or_timeout(self._wake, self.interval)
                self._wake.clear()
        finally:
            await self.stop()

    async def sweep(self) -> int:
        """One pass; returns how many erasures it finished."""
        done = 0
        for member_id in await self.store.erasures_pending():
            try:
                done += await self.finish(member_id)
            except Exception as exc:
                log.warning("erasure of %s not finished yet: %r", member_id, exc)
        return done

    async def finish(self, member_id: str) -> bool:
        """Advance one erasure as far as it can go now; True once nothing is left to do."""
        if member_id in self._busy:
            return False
        self._busy.add(member_id)
        try:
            return await self._advance(member_id)
        finally:
            self._busy.discard(member_id)

    async def _advance(self, member_id: str) -> bool:
        phase = await self.store.purge_phase(member_id)
        if phase is None:
            return True
        # The listing entries hold the region, the Idempotency-Key records the responses:
        # gone with the profile, also when the process died between the tombstone and their
        # removal (or a join's record was written after it).
        await self.store.forget_entries(member_id)
        await self.store.forget_requests(member_id)
        if not self.bus.connected:
            return False
        if await self.store.unpublished_on_subjects_of(member_id):
            # Purging now would let these land in the stream afterwards: publish them first.
            await self.publish_pending(self.store.members.name, member_id)
            if await self.store.unpublished_on_subjects_of(member_id):
                return False
        if phase == "pending":
            for event_type in STEP_ONE_TYPES:
                await self.bus.erase(STREAM, f"members.{event_type}.{member_id}")
            await self.store.set_purge_phase(member_id, LEFT)
            log.info("erasure of %s: personal events erased from %s", member_id, STREAM)
        if not await self._member_left_taken(member_id):
            return False
        await self.bus.erase(STREAM, f"members.*.{member_id}")
        # Last: every consumer has taken member-left, so a copy any of them dead-lettered on
        # the way (member-left included) is in DLQ by now. (No DLQ stream yet: no service has
        # dead-lettered anything, nothing to erase.)
        await self.bus.erase(DLQ_STREAM, dead_letters_of(member_id))
        await self.store.purge_done(member_id)
        log.info(
            "erasure of %s finished: no message of theirs left in %s or %s",
            member_id,
            STREAM,
            DLQ_STREAM,
        )
        return True

    async def _member_left_taken(self, member_id: str) -> bool:
        """Has every durable consumer of the stream that takes member-left acknowledged it?"""
        left = f"members.{LEFT}.{member_id}"
        seq = await self.bus.last_sequence(STREAM, left)
        if seq is None:
            return True
        consumers = await self.bus.durable_consumers(STREAM)
        behind = [c.name for c in consumers if not consumer_is_past(c, left, seq)]
        if behind:
            log.debug("erasure of %s waits for %s to take member-left", member_id, behind)
            return False
        return True

    async def stop(self) -> None:
        """Cancel the immediate attempts (the runtime cancels `loop` at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
