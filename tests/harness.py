"""A `shared.bus.Bus`'s consumers without a server: no nats-server, no MongoDB, milliseconds.

    bus = Bus("engagement", settings, Metrics("engagement"), MemoryDatabase())
    bus.consumers.extend(subscriptions.bind(handlers))
    async with BusHarness(bus) as harness:
        msg = await harness.publish(event)        # through Bus.publish, as a service does
        assert msg.outcome == "ack"
        [dead] = harness.dead_letters             # what went to the DLQ, with its headers

The fake is at the port: the bus publishes through its JetStream context (`bus.js`), and the
harness puts a `RecordingJetStream` there. A publish is recorded (`published`) and handed, as a
`JsMessage` (a nats-py `Msg` with a JetStream ack subject, its settlement recorded instead of
sent), to every consumer of the bus whose stream and filter subjects take it, through the
same `ConsumerWrapper.consume` the pull loop calls (shared/pull.py): decode, dedupe (the bus's
`processed_events` is the database it was given: a `MemoryDatabase` keeps it in memory), the
batch handler or one by one, then the ack / nak(delay) / dead-letter decision. What lands in the
DLQ stream is kept in `dead_letters`. `deliver` hands one consumer a batch of several messages
at once (as one fetch would), at any delivery count.

Unlike JetStream, the fake keeps no duplicate window: the same event published twice reaches
the consumers twice (the wrapper's dedupe is what a test sees).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError

from shared.bus import Bus, Consumer
from shared.events import CloudEvent, subject_matches
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
        subject: str = "",
        data: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        consumer: str = "harness",
        delivered: int = 1,
        pending: int = 0,
        sequence: int | None = None,
    ) -> None:
        self.seq = sequence or next(_SEQUENCE)
        self.stream = stream_of(subject)
        self.consumer = consumer
        self.delivered = delivered
        #: What JetStream says is still pending after this message (num_pending).
        self.pending = pending
        self.timestamp = time.time_ns()
        # A JetStream message's reply is its ack subject, with the metadata in it.
        ack = (
            f"$JS.ACK.{self.stream}.{consumer}.{delivered}.{self.seq}.{self.seq}"
            f".{self.timestamp}.{pending}"
        )
        super().__init__(None, subject=subject, reply=ack, data=data, headers=headers)
        self.outcome: str | None = None
        self.nak_delay: float | None = None
        self.progress = 0

    @property
    def metadata(self) -> Msg.Metadata:
        return Msg.Metadata(
            sequence=Msg.Metadata.SequencePair(consumer=self.seq, stream=self.seq),
            num_pending=self.pending,
            num_delivered=self.delivered,
            timestamp=datetime.fromtimestamp(self.timestamp / 1e9, UTC),
            stream=self.stream,
            consumer=self.consumer,
        )

    def _settle(self, outcome: str) -> None:
        if self.outcome is not None:
            raise MsgAlreadyAckdError(self)
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
        return JsMessage(
            subject=self.subject,
            data=self.data,
            headers=dict(self.headers or {}),
            consumer=self.consumer,
            delivered=delivered or self.delivered + 1,
            sequence=self.seq,
        )


@dataclass
class Published:
    """One publish through the bus's JetStream context, as it went to the port."""

    subject: str
    payload: bytes
    stream: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordingJetStream:
    """Stands in for nats-py's JetStream context at the bus's port (`bus.js`): each publish is
    recorded, then handed to `deliver` (the harness), as JetStream would store and deliver it."""

    deliver: Callable[[Published], Awaitable[None]]
    published: list[Published] = field(default_factory=list)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        del timeout
        sent = Published(subject, payload, stream, dict(headers or {}))
        self.published.append(sent)
        await self.deliver(sent)


class _Connected:
    """What `Bus.connected` reads of a nats-py client."""

    is_connected = True
    is_closed = False

    async def close(self) -> None:
        return None


class BusHarness:
    """Runs a Bus's consumers on a recording JetStream context (see the module's text)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: DLQ copies, in order (subject dlq.<service>.<consumer>.<subject>, Sarafan-Dlq-*).
        self.dead_letters: list[JsMessage] = []
        #: Every publish through the bus (events, DLQ copies), with its headers.
        self.js = RecordingJetStream(self._store)
        self.consumers: dict[str, Consumer] = {}
        #: The messages the last stored publish made (one per consumer that got it).
        self._last: list[JsMessage] = []

    @property
    def published(self) -> list[Published]:
        return self.js.published

    async def __aenter__(self) -> BusHarness:
        self.consumers = {name: loop.consumer for name, loop in self.bus.declare().items()}
        self.bus.nc = _Connected()  # type: ignore[assignment]
        self.bus.js = self.js
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.nc = None
        self.bus.js = None

    async def _store(self, sent: Published) -> None:
        """What JetStream does with a stored message: the DLQ keeps it, every consumer whose
        stream and filters take it gets it (a copy each) in a batch of its own."""
        stream = stream_of(sent.subject)
        if stream == DLQ_STREAM:
            self.dead_letters.append(JsMessage(sent.subject, sent.payload, sent.headers))
            return
        made: list[JsMessage] = []
        for c in self.consumers.values():
            if c.stream == stream and any(subject_matches(f, sent.subject) for f in c.subjects):
                msg = JsMessage(sent.subject, sent.payload, dict(sent.headers), consumer=c.name)
                made.append(msg)
                await self.bus.wrapper.consume(c, [msg])
        # Stored, and no consumer of this bus reads it: the message as it was stored.
        self._last = made or [JsMessage(sent.subject, sent.payload, dict(sent.headers))]

    # -- driving the consumers ----------------------------------------------------------------

    async def publish(self, event: CloudEvent) -> JsMessage:
        """Publish as the service does (`Bus.publish`); the message the (first) consumer got."""
        await self.bus.publish(event)
        return self._last[0]

    async def publish_raw(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> JsMessage:
        """Publish any bytes on a subject (a message no service would send, say)."""
        await self.bus.publish_raw(subject, data, stream_of(subject), headers or {})
        return self._last[0]

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
            msg.pending = len(batch) - 1 - i  # num_pending counts down to the last of the batch
        await self.bus.wrapper.consume(self.consumers[consumer], batch)
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
        return JsMessage(subject, data, headers, consumer=consumer, delivered=delivered)
