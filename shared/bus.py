"""NATS JetStream through FastStream: the connection, streams, publishing with PubAck and
dedup, and the service's durable consumers declared on the broker.

What becomes of each fetched message (validation, dedupe, batches, retries with backoff, dead
letters) is the consumer wrapper's (shared/consumer.py); FastStream's broker and the pull loop
of its batch subscriber, as the project runs them, are in shared/broker.py. The names other
modules import from here (Consumer, retry_delay, ...) still come from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faststream
import nats.js.errors
from faststream.nats import JStream, NatsBroker, NatsUserPassword, PullSub
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig
from pymongo.asynchronous.database import AsyncDatabase

from shared import tracing
from shared.broker import (
    DRAIN_SECONDS,
    FILL_SECONDS,
    STOP_GRACE_SECONDS,
    Broker,
    FastStreamLog,
    PullBatches,
    raw_batch,
)
from shared.clock import woken_or_timeout
from shared.consumer import (
    HEADER_MAX,
    PROCESSED_TTL,
    TRANSIENT_ERRORS,
    BatchHandler,
    Consumer,
    ConsumerWrapper,
    Handler,
    TransientError,
    consumer_config,
    dlq_subject,
    retry_delay,
)
from shared.events import CloudEvent
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from shared.store import expiring_index
from shared.stream_erasure import erase_messages
from shared.topology import DLQ_STREAM, STREAMS, read_ahead

log = logging.getLogger("sarafan.bus")

DUPLICATE_WINDOW = timedelta(minutes=2)

#: Dead letters are kept this long at most (erasure purges a member's at once).
DLQ_MAX_AGE = timedelta(days=30)


class BusUnavailable(TransientError):
    """NATS is not connected right now; the outbox keeps the event until it is."""


@dataclass
class _Running:
    consumer: Consumer
    subscriber: PullBatches
    ready: bool = False


@dataclass
class Bus:
    """One service's connection to JetStream: its own stream, the DLQ, its consumers.

    A thin layer over a FastStream `NatsBroker`: FastStream connects, fetches the batches and
    publishes; the wrapper decides what becomes of each message (ack, retry, dead letter).
    """

    service: str
    settings: ServiceSettings
    metrics: Metrics
    db: AsyncDatabase[dict[str, Any]]
    consumers: list[Consumer] = field(default_factory=list)
    on_connected: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = self._make_broker()
        self.nc: NatsClient | None = None
        #: The JetStream context (stream management, key-value buckets), once connected.
        self.js: Any = None
        self.streams_ready = False
        self._running: dict[str, _Running] = {}
        self._main: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._prepared = False
        self.processed = self.db["processed_events"]
        #: What becomes of each fetched message (shared/consumer.py).
        self.wrapper = ConsumerWrapper(
            self.service, self.settings, self.metrics, self.processed, self.broker
        )

    @property
    def _inbox_prefix(self) -> str:
        # With its own user a service may only receive on its own inbox prefix
        # (deploy/nats, sarafan/nats_auth.py); without one, the client default.
        return f"_INBOX_{self.service}" if self.settings.nats_user else "_INBOX"

    def _make_broker(self) -> NatsBroker:
        s = self.settings
        return Broker(
            # A comma-separated list names several servers of a cluster.
            [u.strip() for u in s.nats_url.split(",") if u.strip()],
            security=NatsUserPassword(s.nats_user, s.nats_password or "") if s.nats_user else None,
            # The connection's inbox serves JetStream API replies; pull subscriptions get it
            # passed one by one (a FastStream subscriber does not take the broker's).
            inbox_prefix=self._inbox_prefix,
            name=f"sarafan-{self.service}",
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            # Notice a half-open connection in seconds, not nats-py's 4 minutes.
            ping_interval=s.nats_ping_seconds,
            max_outstanding_pings=3,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
            js_options={"timeout": 5},
            graceful_timeout=STOP_GRACE_SECONDS,
            drain_timeout=DRAIN_SECONDS,
            # The wrapper validates each event itself (parse_event), so no FastDepends model.
            apply_types=False,
            logger=FastStreamLog(),
            description=f"Sarafan {self.service}",
        )

    def _subscribe(self, c: Consumer) -> PullBatches:
        """Declare `c` on the broker: a batch pull subscriber on its durable, settled by hand."""
        subscriber = self.broker.subscriber(
            # One filter subject is the subscriber's subject; several go in the config.
            c.subjects[0] if len(c.subjects) == 1 else "",
            # The source stream belongs to its producer: never declared from here.
            stream=JStream(c.stream, declare=False),
            durable=c.name,
            config=consumer_config(c, self.settings),
            pull_sub=PullSub(batch_size=c.batch_size, timeout=FILL_SECONDS, batch=True),
            # Every message is acked, retried or dead-lettered by the wrapper, one by one.
            ack_policy=faststream.AckPolicy.MANUAL,
            inbox_prefix=f"{self._inbox_prefix}.".encode(),
            decoder=raw_batch,
            no_reply=True,
            title=c.name,
            description=f"durable pull consumer {c.name} on {c.stream}",
        )

        # The same subscriber with the project's pull loop (see PullBatches).
        subscriber.__class__ = PullBatches
        assert isinstance(subscriber, PullBatches)
        pending = self.metrics.consumer_pending.labels(self.service, c.name)
        subscriber.on_idle = lambda: pending.set(0)

        # Typed loosely: FastStream's AsyncAPI generator builds a schema from this signature,
        # and nats-py's Msg has none.
        async def consume(msgs: list[Any]) -> None:
            await self.wrapper.consume(c, msgs)

        consume.__name__ = c.name.replace("-", "_")
        subscriber(consume)
        return subscriber

    # -- lifecycle ------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """The processed-event records' indexes (MongoDB); `start` makes them when not yet."""
        await expiring_index(
            self.processed, "at", int(PROCESSED_TTL.total_seconds()), kept_by_job=True
        )
        await self.processed.create_index("at_ms")
        self._prepared = True

    async def start(self) -> None:
        """Connect in the background: the service serves HTTP (and writes) while NATS is away."""
        if not self._prepared:
            await self.prepare()
        self.declare()
        self._main = asyncio.create_task(self._connect_and_run(), name=f"{self.service}-bus")

    def declare(self) -> dict[str, PullBatches]:
        """Declare every consumer on the broker, once: their subscribers by consumer name.
        `start` does it before connecting; FastStream's test broker drives them without."""
        if not self._running:
            self._running = {c.name: _Running(c, self._subscribe(c)) for c in self.consumers}
        return {name: r.subscriber for name, r in self._running.items()}

    async def stop(self) -> None:
        self._stopping.set()
        if self._main is not None and not self._main.done():
            # Still connecting or binding: nothing in hand that needs finishing.
            self._main.cancel()
            with contextlib.suppress(BaseException):
                await self._main
        try:
            # Lets a batch in hand finish (its acks go out), stops the pull loops, unsubscribes,
            # then drains the connection.
            await self.broker.stop()
        except Exception as exc:
            # Drain refuses a connection that is reconnecting: it is closed below instead.
            log.debug("stopping the broker: %r", exc)
        finally:
            if self.nc is not None and not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def ready(self) -> bool:
        return (
            self.connected and self.streams_ready and all(r.ready for r in self._running.values())
        )

    async def _connect_and_run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                self.nc = await self.broker.connect()
                break
            except Exception as exc:
                log.warning("NATS not reachable at %s (%s); retrying", self.settings.nats_url, exc)
                await woken_or_timeout(self._stopping, delay)
                delay = min(delay * 2, 5.0)
        if self._stopping.is_set():
            return
        self.js = self.broker.config.connection_state.stream
        log.info("connected to NATS at %s", self.settings.nats_url)
        await self._retry_until_done(self._declare_streams, "declare streams")
        self.streams_ready = True
        # Before binding: a consumer waits for its producer's stream, and nothing the hooks do
        # (watching the API keys, publishing the outbox) should wait for another service.
        for hook in self.on_connected:
            await hook()
        for running in self._running.values():
            await self._retry_until_done(
                lambda r=running: self._bind(r), f"bind {running.consumer.name}"
            )

    async def _retry_until_done(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await step()
                return
            except Exception as exc:
                log.warning("%s failed: %s; retrying", what, exc)
                await woken_or_timeout(self._stopping, delay)
                delay = min(delay * 2, 5.0)

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        # What piled up in outboxes while NATS was away goes out now, not at the next sweep.
        for hook in self.on_connected:
            await hook()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    # -- streams --------------------------------------------------------------------------------

    def stream_config(self, name: str, subjects: list[str]) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            num_replicas=self.settings.stream_replicas,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
            max_age=DLQ_MAX_AGE.total_seconds() if name == DLQ_STREAM else None,
        )

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(config)
                log.info("declared stream %s %s", config.name, config.subjects)
            except nats.js.errors.BadRequestError:
                # Another service declared it in between (the same config, or an older one).
                await self.js.stream_info(config.name)

    async def _declare_streams(self) -> None:
        # Not FastStream's declaration (JStream(declare=True)): it would merge the subjects of
        # every subscriber into the stream, and an existing stream is kept as it is here.
        own = STREAMS[self.service]
        await self._ensure_stream(self.stream_config(own, [f"{self.service}.>"]))
        # Every service may dead-letter, so each makes sure the shared DLQ stream exists.
        await self._ensure_stream(self.stream_config(DLQ_STREAM, ["dlq.>"]))
        # The streams it reads ahead of their producers (topology.EXTRA_STREAMS), with exactly
        # their producer's configuration: it binds its consumers and is ready without them.
        await self.ensure_streams(read_ahead(self.service))

    async def ensure_streams(self, streams: Mapping[str, str]) -> None:
        """Declare the streams of other producers (stream name → producing service) with
        exactly the configuration their producer gives them, when they do not exist yet."""
        for stream, producer in streams.items():
            await self._ensure_stream(self.stream_config(stream, [f"{producer}.>"]))

    # -- stream maintenance (erasure) ------------------------------------------------------------

    def _js_or_unavailable(self) -> Any:
        if not self.connected or self.js is None:
            raise BusUnavailable("NATS is not connected")
        return self.js

    async def erase(self, stream: str, subject: str) -> int:
        """Securely delete every message of `stream` on `subject` (wildcards allowed): found
        through the stream's per-subject index, their bytes overwritten in the store
        (shared/stream_erasure.py). Returns how many; 0 when the stream does not exist (yet)."""
        js = self._js_or_unavailable()
        return await erase_messages(self.nc, js, stream, subject)

    async def last_sequence(self, stream: str, subject: str) -> int | None:
        """The stream sequence of the last message on `subject`, or None when there is none."""
        js = self._js_or_unavailable()
        try:
            return int((await js.get_last_msg(stream, subject)).seq)
        except nats.js.errors.NotFoundError:
            return None

    async def durable_consumers(self, stream: str) -> list[Any]:
        """The durable consumers of `stream` (nats-py ConsumerInfo), for progress checks."""
        js = self._js_or_unavailable()
        return [c for c in await js.consumers_info(stream) if c.config.durable_name]

    async def key_value(self, bucket: str) -> Any:
        """A JetStream key-value bucket (nats-py KeyValue); raises NotFoundError when absent."""
        return await self._js_or_unavailable().key_value(bucket)

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, event: CloudEvent) -> None:
        """Publish and wait for the PubAck; raises when JetStream has not stored the event."""
        if not self.connected or self.js is None:
            raise BusUnavailable("NATS is not connected")
        subject = event.nats_subject
        await self.broker.publish(
            event.to_json(),
            subject,
            # With `stream=` the broker waits for the PubAck, and Nats-Msg-Id lets JetStream
            # drop a repeat of the same event inside the duplicate window; the content type
            # says structured mode (the CloudEvents NATS binding), replacing FastStream's own.
            stream=STREAMS[subject.split(".", 1)[0]],
            timeout=5,
            # The current span (the relay's publish span) travels as `traceparent`, if any.
            headers={**event.nats_headers(), **tracing.current_fields()},
            correlation_id=event.correlationid,
        )
        self.metrics.events_published.labels(self.service, event.type).inc()

    # -- consuming ------------------------------------------------------------------------------

    async def _bind(self, running: _Running) -> None:
        c = running.consumer
        # The source stream belongs to its producer; wait for it rather than declaring it.
        await self.js.stream_info(c.stream)
        # Created or updated before subscribing: pull_subscribe keeps an existing durable's
        # configuration as it is, so a changed ack_wait or filter would never reach the server.
        await self.js.add_consumer(c.stream, consumer_config(c, self.settings))
        await running.subscriber.start()
        running.ready = True
        log.info("consuming %s from %s as %s", c.subjects, c.stream, c.name)


__all__ = [
    "DLQ_MAX_AGE",
    "DLQ_STREAM",
    "DUPLICATE_WINDOW",
    "HEADER_MAX",
    "PROCESSED_TTL",
    "STREAMS",
    "TRANSIENT_ERRORS",
    "BatchHandler",
    "Bus",
    "BusUnavailable",
    "Consumer",
    "Handler",
    "TransientError",
    "consumer_config",
    "dlq_subject",
    "retry_delay",
]
