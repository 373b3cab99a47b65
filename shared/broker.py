"""FastStream's NATS broker and batch pull subscriber, as the project runs them: a broker that
never stops reconnecting, FastStream's log lines in ours, and the project's pull loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
from faststream.nats import NatsBroker
from faststream.nats.subscriber.usecases import BatchPullStreamSubscriber
from nats.aio.msg import Msg

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
#: On stop, how long the connection may take to flush what it still has to send.
DRAIN_SECONDS = 2


class Broker(NatsBroker):
    """FastStream's NATS broker, except that a connection error never ends reconnecting.

    FastStream's error callback re-raises some server errors ("authorization violation",
    "maximum connections exceeded", ...). nats-py calls that callback inside its reconnect
    loop, where the raise ends the loop for good: a server restarting with its accounts not
    yet loaded would leave the service disconnected until it is restarted. Ours keeps trying,
    as nats-py does, and the first connect is retried by `Bus._connect_and_run`.
    """

    def _log_connection_broken(self, error_cb: Any = None) -> Any:
        async def report(err: Exception) -> None:
            if error_cb is not None:
                await error_cb(err)

        return report


class FastStreamLog:
    """FastStream's log lines, in ours: its info lines (each batch received and processed, a
    pull task's callback at stop) are debug lines here; its warnings and errors stay as they are."""

    _log = logging.getLogger("sarafan.bus.faststream")

    def log(
        self,
        level: int,
        msg: Any,
        /,
        *,
        exc_info: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._log.log(
            logging.DEBUG if level <= logging.INFO else level, msg, exc_info=exc_info, extra=extra
        )


class PullBatches(BatchPullStreamSubscriber):
    """FastStream's batch pull subscriber, with the pull loop of the project.

    FastStream's loop keeps fetching until the batch is full or `timeout` has passed, with
    three costs here: an idle consumer sends a pull request every `timeout` (40 requests a
    second at 0.05 s, ten times the CPU of an idle service), a pull request that fails
    (a cluster electing a leader) is retried at once in a tight loop, and nats-py's
    `asyncio.TimeoutError` at the end of a fill escapes it, so the messages fetched so far
    are dropped unacknowledged until ack_wait brings them back. This loop waits for the
    first message with one long pull, tops the batch up while JetStream reports more pending,
    hands over what it has whatever the second pull raises, and backs off after a failure.
    """

    __slots__ = ()

    #: Called when a pull found nothing (the consumer has nothing pending).
    on_idle: Callable[[], None] | None = None

    async def _consume_pull(self) -> None:
        while self.running:
            try:
                msgs = await self._next_batch()
            except Exception as exc:
                if not self.running:
                    return
                log.debug("pull on %s failed: %r", self.config.durable_name, exc)
                await asyncio.sleep(FETCH_RETRY_SECONDS)
                continue
            if not msgs:
                if self.on_idle is not None:
                    self.on_idle()
            elif self.running:
                await self.consume(msgs)
            else:
                # Stopping: give them back now rather than after ack_wait.
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()

    async def _next_batch(self) -> list[Msg]:
        assert self.subscription is not None
        try:
            msgs = await self.subscription.fetch(batch=1, timeout=IDLE_POLL_SECONDS)
        except nats.errors.TimeoutError:
            return []
        size, fill = self.pull_sub.batch_size, self.pull_sub.timeout or FILL_SECONDS
        while len(msgs) < size and msgs[-1].metadata.num_pending and self.running:
            try:
                msgs += await self.subscription.fetch(batch=size - len(msgs), timeout=fill)
            except Exception:
                break  # a timeout or a lost connection: the messages in hand are handled
        return msgs


async def raw_batch(message: Any) -> list[Msg]:
    """The fetched nats-py messages as they are: the wrapper decodes each one itself, so one
    invalid message is dead-lettered alone (a typed `list[Model]` batch would reject them all)."""
    raw: list[Msg] = message.raw_message
    return raw
