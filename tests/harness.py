"""A `shared.bus.Bus`'s consumers under FastStream's TestNatsBroker: no nats-server, no MongoDB.

    bus = Bus("engagement", settings, Metrics("engagement"), MemoryDatabase())
    bus.consumers.extend(subscriptions.bind(handlers))
    async with BusHarness(bus) as harness:
        msg = await harness.publish(event)        # through Bus.publish, as a service does
        assert msg.outcome == "ack"
        [dead] = harness.dead_letters             # what went to the DLQ, with its headers

A published event goes through the real consumer wrapper: decode, dedupe (the bus's
`processed_events` is the database it was given: a `MemoryDatabase` keeps it in memory), the
batch handler or one by one, then the ack / nak(delay) / dead-letter decision. `deliver` hands
one consumer a batch of several messages at once (as one fetch would), at any delivery count.

How TestNatsBroker is made to drive the project's batch pull subscriber, and why:

- TestNatsBroker does hand a batch subscriber (`PullSub(batch=True)`) a list, a one-message
  batch per publish, and our decoder gets it as `raw_message`. But its message (FastStream's
  `PatchedMessage`) is no JetStream message: no reply subject, so nats-py's `metadata`
  (num_delivered, num_pending, stream and sequence, which the wrapper reads on every batch
  and for every retry and dead letter) raises NotJSMessageError. Inside the harness,
  `PatchedMessage` is `JsMessage`: the same nats-py `Msg` with a JetStream reply subject
  (nats-py parses the metadata from it) and acks recorded instead of sent.
- TestNatsBroker routes a publish to every subscriber on the subject and stream, so the DLQ
  copies (published to stream DLQ) are caught by a subscriber on `dlq.>` the harness adds.
- `Bus.publish` refuses when the bus is not connected; the harness marks it connected (its
  `nc` and `js`), which TestNatsBroker's fake connection does not do.
- The bus's subscribers are declared by `Bus.declare` (no `Bus.start`: that would connect and
  run the pull loops; under TestNatsBroker messages are pushed to `process_message` instead).

TestNatsBroker hands one message object to every matching subscriber: with two consumers on
the same subject, one publish is one `JsMessage` settled twice (MsgAlreadyAckdError). Give
such a test one consumer per subject, or `deliver` to each consumer apart.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any
from unittest import mock

import faststream.nats.testing
from faststream.nats import JStream, TestNatsBroker
from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError

from shared.bus import Bus
from shared.events import CloudEvent
from shared.topology import DLQ_STREAM, STREAMS

_SEQUENCE = itertools.count(1)


def stream_of(subject: str) -> str:
    """The stream a subject is stored in: its producer's, or the DLQ."""
    first = subject.split(".", 1)[0]
    return DLQ_STREAM if first == "dlq" else STREAMS.get(first, "TEST")


class JsMessage(Msg):
    """A JetStream message as nats-py hands it to a pull consumer, recording what was done
    with it: `outcome` ("ack", "nak", "term" or None), `nak_delay`, `progress` (+WPI count)."""

    def __init__(
        self,
        _client: Any = None,
        subject: str = "",
        reply: str = "",
        data: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        consumer: str = "harness",
        delivered: int = 1,
        pending: int = 0,
        sequence: int | None = None,
    ) -> None:
        del reply  # a JetStream message's reply is its ack subject, with the metadata in it
        self.seq = sequence or next(_SEQUENCE)
        ack = (
            f"$JS.ACK.{stream_of(subject)}.{consumer}.{delivered}.{self.seq}.{self.seq}"
            f".{time.time_ns()}.{pending}"
        )
        super().__init__(_client, subject=subject, reply=ack, data=data, headers=headers)
        self.outcome: str | None = None
        self.nak_delay: float | None = None
        self.progress = 0

    def _settle(self, outcome: str) -> None:
        if self._ackd:
            raise MsgAlreadyAckdError(self)
        self._ackd = True
        self.outcome = outcome

    async def ack(self) -> None:
        self._settle("ack")

    async def ack_sync(self, timeout: float = 1.0) -> JsMessage:
        self._settle("ack")
        return self

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak")
        self.nak_delay = delay

    async def term(self) -> None:
        self._settle("term")

    async def in_progress(self) -> None:
        self.progress += 1

    def again(self, delivered: int | None = None) -> JsMessage:
        """The same stored message delivered once more (what JetStream does after a nak)."""
        meta = self.metadata
        return JsMessage(
            subject=self.subject,
            data=self.data,
            headers=dict(self.headers or {}),
            consumer=meta.consumer,
            delivered=delivered or meta.num_delivered + 1,
            sequence=self.seq,
        )


class _Connected:
    """What `Bus.connected` reads of a nats-py client."""

    is_connected = True
    is_closed = False

    async def close(self) -> None:
        return None


async def _raw(message: Any) -> Any:
    return message.raw_message


class BusHarness:
    """Runs a Bus's consumers under TestNatsBroker (see the module's text)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: DLQ copies, in order (subject dlq.<service>.<consumer>.<subject>, Sarafan-Dlq-*).
        self.dead_letters: list[JsMessage] = []
        #: Every publish through the broker (events, DLQ copies): FastStream publish commands.
        self.published: list[Any] = []
        self._made: list[JsMessage] = []
        self._stack = AsyncExitStack()
        self.subscribers: dict[str, Any] = {}

    async def __aenter__(self) -> BusHarness:
        self.subscribers = self.bus.declare()
        # Where the DLQ copies land (one harness per bus: a second would add a second one).
        dlq = self.bus.broker.subscriber(
            "dlq.>", stream=JStream(DLQ_STREAM, declare=False), decoder=_raw
        )
        dlq(self._dead_letter)
        self._stack.enter_context(
            mock.patch.object(faststream.nats.testing, "PatchedMessage", self._message)
        )
        await self._stack.enter_async_context(TestNatsBroker(self.bus.broker))
        producer = self.bus.broker.config.broker_config.producer
        publish = producer.publish

        async def recording(cmd: Any) -> Any:
            self.published.append(cmd)
            return await publish(cmd)

        producer.publish = recording
        self.bus.nc = _Connected()  # type: ignore[assignment]
        self.bus.js = self.bus.broker.config.connection_state.stream
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.nc = None
        self.bus.js = None
        await self._stack.aclose()

    def _message(self, *args: Any, **kwargs: Any) -> JsMessage:
        msg = JsMessage(*args, **kwargs)
        self._made.append(msg)
        return msg

    async def _dead_letter(self, msg: JsMessage) -> None:
        self.dead_letters.append(msg)

    # -- driving the consumers ----------------------------------------------------------------

    async def publish(self, event: CloudEvent) -> JsMessage:
        """Publish as the service does (`Bus.publish`); the message the consumers got."""
        made = len(self._made)
        await self.bus.publish(event)
        return self._made[made]

    async def publish_raw(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> JsMessage:
        """Publish any bytes on a subject (a message no service would send, say)."""
        made = len(self._made)
        await self.bus.broker.publish(
            data, subject, stream=stream_of(subject), headers=headers or {}
        )
        return self._made[made]

    async def deliver(
        self,
        consumer: str,
        items: Iterable[CloudEvent | JsMessage | tuple[str, bytes]],
        *,
        delivered: int = 1,
    ) -> list[JsMessage]:
        """Hand `consumer` one batch, as one fetch returns it: events, (subject, bytes) or
        messages (`JsMessage.again()` for a redelivery)."""
        batch = [self._as_message(consumer, item, delivered) for item in items]
        for i, msg in enumerate(batch):
            msg._metadata = None  # num_pending counts down to the last of the batch
            msg.reply = _with_pending(msg.reply, len(batch) - 1 - i)
        await self.subscribers[consumer].process_message(batch)
        return batch

    @staticmethod
    def _as_message(
        consumer: str, item: CloudEvent | JsMessage | tuple[str, bytes], delivered: int
    ) -> JsMessage:
        if isinstance(item, JsMessage):
            return item
        if isinstance(item, CloudEvent):
            subject, data = item.nats_subject, item.to_json()
            headers = item.nats_headers()
        else:
            (subject, data), headers = item, {}
        return JsMessage(
            subject=subject, data=data, headers=headers, consumer=consumer, delivered=delivered
        )


def _with_pending(reply: str, pending: int) -> str:
    return ".".join([*reply.split(".")[:-1], str(pending)])
