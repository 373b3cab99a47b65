"""One durable consumer's pull loop, on nats-py: bind, fetch batches, hand them to the wrapper.

The loop waits for a first message with one long pull (`fetch(batch=1)`, IDLE_POLL_SECONDS),
tops the batch up while JetStream reports more pending (`num_pending`) with short pulls
(FILL_SECONDS), and hands what it has to the consumer wrapper (shared/consumer.py), which
settles every message. nats-py's `fetch` returns as soon as a message is there and keeps what
arrived when a top-up times out, so a lone event is handled at once and a backlog is read in
full batches; an idle consumer sends one pull request per IDLE_POLL_SECONDS. A failed pull
(the connection away, a cluster electing a leader) is tried again after FETCH_RETRY_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from shared.clock import woken_or_timeout
from shared.consumer import Consumer, consumer_config
from shared.settings import ServiceSettings

log = logging.getLogger("sarafan.bus")

#: How long one pull request waits for a first message when the consumer is idle: one request
#: a second per consumer, and a message that arrives meanwhile is handed over at once.
IDLE_POLL_SECONDS = 1.0
#: How long the pull loop waits for more messages to fill a batch, while JetStream says there
#: are more (num_pending): a backlog is read in full batches, a lone event is not held back.
FILL_SECONDS = 0.05
#: After a failed pull (connection away, a cluster electing a leader), the next one waits this.
FETCH_RETRY_SECONDS = 0.5
#: On stop, how long a batch in hand may take to finish (its acks go out) before it is cut.
STOP_GRACE_SECONDS = 5.0

#: What the loop hands each batch to: `ConsumerWrapper.consume`.
Consume = Callable[[Consumer, list[Msg]], Awaitable[None]]


class PullLoop:
    """The pull loop of one durable consumer (see the module's text)."""

    def __init__(
        self, consumer: Consumer, consume: Consume, on_idle: Callable[[], None] | None = None
    ) -> None:
        self.consumer = consumer
        self.consume = consume
        #: Called when a pull found nothing (the consumer has nothing pending).
        self.on_idle = on_idle
        self.ready = False
        self.subscription: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._handling = False

    async def bind(self, js: Any, settings: ServiceSettings, inbox_prefix: str) -> None:
        """Create or update the durable, subscribe to it and start pulling."""
        c = self.consumer
        # The source stream belongs to its producer; wait for it rather than declaring it.
        await js.stream_info(c.stream)
        # Created or updated before subscribing: binding keeps an existing durable's
        # configuration as it is, so a changed ack_wait or filter would never reach the server.
        await js.add_consumer(c.stream, consumer_config(c, settings))
        # With its own user a service may only receive on its own inbox prefix.
        self.subscription = await js.pull_subscribe_bind(
            c.name, c.stream, inbox_prefix=f"{inbox_prefix}.".encode()
        )
        self.start()
        log.info("consuming %s from %s as %s", c.subjects, c.stream, c.name)

    def start(self) -> None:
        """Start pulling on `subscription` (`bind` does, once subscribed)."""
        self._task = asyncio.create_task(self._run(), name=f"pull-{self.consumer.name}")
        self.ready = True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._next_batch()
            except Exception as exc:
                log.debug("pull on %s failed: %r", self.consumer.name, exc)
                await woken_or_timeout(self._stopping, FETCH_RETRY_SECONDS)
                continue
            if not msgs:
                if self.on_idle is not None:
                    self.on_idle()
                continue
            try:
                if self._stopping.is_set():
                    await _give_back(msgs)
                    return
                await self.consume(self.consumer, msgs)
            except asyncio.CancelledError:
                # Cut at stop after the grace period: what it had not settled comes back now.
                await asyncio.shield(_give_back(msgs))
                raise
            finally:
                self._handling = False

    async def _next_batch(self) -> list[Msg]:
        try:
            msgs: list[Msg] = await self.subscription.fetch(batch=1, timeout=IDLE_POLL_SECONDS)
        except nats.errors.TimeoutError:
            return []
        # From here the batch is in hand: a stop lets it finish.
        self._handling = True
        size = self.consumer.batch_size
        while len(msgs) < size and msgs[-1].metadata.num_pending and not self._stopping.is_set():
            try:
                msgs += await self.subscription.fetch(batch=size - len(msgs), timeout=FILL_SECONDS)
            except Exception:
                break  # a timeout or a lost connection: the messages in hand are handled
        return msgs

    async def stop(self) -> None:
        """Stop pulling: a batch in hand may finish (STOP_GRACE_SECONDS), a pull waiting for a
        first message is cut (a message the server sent in that instant comes back after
        ack_wait, as after a crash), then the subscription ends."""
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            if self._handling:
                await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await self.subscription.unsubscribe()
        self.ready = False


async def _give_back(msgs: list[Msg]) -> None:
    """Nak each message not settled yet, so it is redelivered now rather than after ack_wait
    (nats-py refuses, locally, to settle a message twice: those are skipped)."""
    for msg in msgs:
        with contextlib.suppress(Exception):
            await msg.nak()
