"""NATS JetStream on nats-py: the connection, streams, publishing with PubAck and dedup, and
the service's durable consumers, each pulled by its own task.

What becomes of each fetched message (validation, dedupe, batches, retries with backoff, dead
letters) is the consumer wrapper's (shared/consumer.py); the pull loop of one durable consumer
is shared/pull.py. FastStream describes the same declarations as an AsyncAPI document
(shared/asyncapi.py); it does not run here (docs/patterns.md, 8). The names other
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

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig
from pymongo.asynchronous.database import AsyncDatabase

from shared import tracing
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
from shared.pull import PullLoop
from shared.retry import retry
from shared.settings import ServiceSettings
from shared.store import expiring_index
from shared.stream_erasure import erase_messages
from shared.topology import DLQ_STREAM, STREAMS, read_ahead

log = logging.getLogger("sarafan.bus")

DUPLICATE_WINDOW = timedelta(minutes=2)

#: Dead letters are kept this long at most (erasure purges a member's at once).
DLQ_MAX_AGE = timedelta(days=30)
#: How long a publish (and any JetStream API call) waits for the server's answer.
JS_TIMEOUT = 5.0
#: On stop, how long the connection may take to flush what it still has to send.
DRAIN_SECONDS = 2


class BusUnavailable(TransientError):
    """NATS is not connected right now; the outbox keeps the event until it is."""


@dataclass
class Bus:
    """One service's connection to JetStream: its own stream, the DLQ, its consumers.

    nats-py connects, publishes and fetches; one `PullLoop` task per durable consumer hands
    each batch to the wrapper, which decides what becomes of each message (ack, retry, DLQ).
    """

    service: str
    settings: ServiceSettings
    metrics: Metrics
    db: AsyncDatabase[dict[str, Any]]
    consumers: list[Consumer] = field(default_factory=list)
    on_connected: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nc: NatsClient | None = None
        #: The JetStream context (publishing, streams, key-value buckets), once connected.
        self.js: Any = None
        self.streams_ready = False
        self._loops: dict[str, PullLoop] = {}
        self._main: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._prepared = False
        self.processed = self.db["processed_events"]
        #: What becomes of each fetched message (shared/consumer.py).
        self.wrapper = ConsumerWrapper(
            self.service, self.settings, self.metrics, self.processed, self.publish_raw
        )

    @property
    def inbox_prefix(self) -> str:
        # With its own user a service may only receive on its own inbox prefix
        # (deploy/nats, sarafan/nats_auth.py); without one, the client default.
        return f"_INBOX_{self.service}" if self.settings.nats_user else "_INBOX"

    async def _connect(self) -> NatsClient:
        s = self.settings
        return await nats.connect(
            # A comma-separated list names several servers of a cluster.
            servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
            user=s.nats_user or None,
            password=(s.nats_password or "") if s.nats_user else None,
            # The connection's inbox serves JetStream API replies; the pull subscriptions get
            # the same prefix (PullLoop.bind).
            inbox_prefix=self.inbox_prefix,
            name=f"sarafan-{self.service}",
            connect_timeout=2,
            # Reconnect for ever: nats-py keeps trying whatever the server answers (a server
            # restarting with its accounts not yet loaded says "authorization violation").
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            # Notice a half-open connection in seconds, not nats-py's 4 minutes.
            ping_interval=s.nats_ping_seconds,
            max_outstanding_pings=3,
            drain_timeout=DRAIN_SECONDS,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )

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

    def declare(self) -> dict[str, PullLoop]:
        """The pull loop of every consumer, once, by consumer name; `start` binds them when
        connected (tests/harness.py drives the same consumers without a server)."""
        if not self._loops:
            for c in self.consumers:
                pending = self.metrics.consumer_pending.labels(self.service, c.name)
                self._loops[c.name] = PullLoop(
                    c, self.wrapper.consume, on_idle=lambda p=pending: p.set(0)
                )
        return dict(self._loops)

    async def stop(self) -> None:
        self._stopping.set()
        if self._main is not None and not self._main.done():
            # Still connecting or binding: nothing in hand that needs finishing.
            self._main.cancel()
            with contextlib.suppress(BaseException):
                await self._main
        # Each loop lets a batch in hand finish (its acks go out), then unsubscribes.
        await asyncio.gather(*(loop.stop() for loop in self._loops.values()))
        if self.nc is None or self.nc.is_closed:
            return
        try:
            # Flushes what the connection still has to send (acks, publishes), then closes.
            await self.nc.drain()
        except Exception as exc:
            # Drain refuses a connection that is reconnecting: it is closed below instead.
            log.debug("draining the NATS connection: %r", exc)
        finally:
            if not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def ready(self) -> bool:
        return self.connected and self.streams_ready and all(p.ready for p in self._loops.values())

    async def _connect_and_run(self) -> None:
        where = self.settings.nats_url
        nc = await retry(self._connect, what=f"connecting to NATS at {where}", stop=self._stopping)
        if nc is None:  # stopped before NATS answered
            return
        self.nc = nc
        self.js = self.nc.jetstream(timeout=JS_TIMEOUT)
        log.info("connected to NATS at %s", self.settings.nats_url)
        await retry(self._declare_streams, what="declare streams", stop=self._stopping)
        self.streams_ready = True
        # Before binding: a consumer waits for its producer's stream, and nothing the hooks do
        # (watching the API keys, publishing the outbox) should wait for another service.
        for hook in self.on_connected:
            await hook()
        for loop in self._loops.values():
            await retry(
                lambda p=loop: p.bind(self.js, self.settings, self.inbox_prefix),
                what=f"bind {loop.consumer.name}",
                stop=self._stopping,
            )

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
        # Each stream with its producer's subjects; an existing stream is kept as it is.
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
        subject = event.nats_subject
        headers = {
            # The header FastStream wrote before the bus ran on nats-py (the AsyncAPI document
            # declares it), kept on the wire for the readers that use it.
            "correlation_id": event.correlationid or event.id,
            # Nats-Msg-Id lets JetStream drop a repeat of the same event inside the duplicate
            # window; the content type says structured mode (the CloudEvents NATS binding).
            **event.nats_headers(),
            # The current span (the relay's publish span) travels as `traceparent`, if any.
            **tracing.current_fields(),
        }
        await self.publish_raw(subject, event.to_json(), STREAMS[subject.split(".", 1)[0]], headers)
        self.metrics.events_published.labels(self.service, event.type).inc()

    async def publish_raw(
        self, subject: str, data: bytes, stream: str, headers: dict[str, str]
    ) -> None:
        """Publish bytes to `stream` (the stream it must land in: JetStream refuses otherwise)
        and wait for the PubAck; the dead letters go this way."""
        js = self._js_or_unavailable()
        await js.publish(subject, data, timeout=JS_TIMEOUT, stream=stream, headers=headers)


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
