"""NATS JetStream through FastStream: streams, publishing with PubAck and dedup, the consumer
wrapper (validation, dedupe, batches, retries with backoff, dead letters)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faststream
import nats.errors
import nats.js.errors
from faststream.nats import JStream, NatsBroker, NatsUserPassword, PullSub
from faststream.nats.subscriber.usecases import BatchPullStreamSubscriber
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.events import CloudEvent, EventData, InvalidEvent, parse_event, utcnow
from shared.logs import event_context
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from shared.store import TRANSIENT_DB_ERRORS, epoch_ms, is_duplicate_key, only_duplicates

log = logging.getLogger("sarafan.bus")

#: Each service owns one stream holding every event it publishes.
STREAMS = {
    "members": "MEMBERS",
    "engagement": "ENGAGEMENT",
    "campaigns": "CAMPAIGNS",
    "notifier": "NOTIFIER",
}
DLQ_STREAM = "DLQ"
DUPLICATE_WINDOW = timedelta(minutes=2)
PROCESSED_TTL = timedelta(days=7)
HEADER_MAX = 1000


#: Dead letters are kept this long at most (erasure purges a member's at once).
DLQ_MAX_AGE = timedelta(days=30)

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


def dlq_subject(service: str, consumer: str, original: str) -> str:
    return f"dlq.{service}.{consumer}.{original}"


class TransientError(Exception):
    """A failure that may pass by itself (a peer away, a timeout): the message is retried."""


class BusUnavailable(TransientError):
    """NATS is not connected right now; the outbox keeps the event until it is."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,
    ConnectionError,
    nats.errors.Error,
    *TRANSIENT_DB_ERRORS,
)

Handler = Callable[[CloudEvent, EventData], Awaitable[None]]
BatchHandler = Callable[[list[tuple[CloudEvent, EventData]]], Awaitable[None]]


@dataclass
class Consumer:
    """A durable pull consumer: where it reads, and the handler it feeds.

    `handle` gets one event; `handle_batch`, when given, gets every new event of a fetched batch
    at once (one bulk write) and the wrapper falls back to `handle` one by one if it fails.
    """

    name: str
    stream: str
    subjects: list[str]
    handle: Handler
    handle_batch: BatchHandler | None = None
    batch_size: int = 100
    #: Skip event ids this consumer already processed (a processed_events record per event).
    #: A consumer whose every effect is itself keyed by the event (PATTERNS 2) may turn it
    #: off to save two database round trips per batch; duplicates then change nothing anyway.
    dedupe: bool = True
    #: Seconds before an unacknowledged message is redelivered (after a crash); None takes
    #: SARAFAN_ACK_WAIT_SECONDS. A handler may run longer: the wrapper sends in-progress acks.
    ack_wait: float | None = None


def consumer_config(c: Consumer, settings: ServiceSettings) -> ConsumerConfig:
    """The durable's configuration on the server, the same on every start (see `Bus._bind`)."""
    return ConsumerConfig(
        durable_name=c.name,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=c.ack_wait or settings.ack_wait_seconds,
        # Our wrapper dead-letters at max_deliver; the server bound is a safety net for a
        # handler that crashes the process on every try, so it can never loop for ever.
        max_deliver=settings.max_deliver + 2,
        max_ack_pending=max(1000, c.batch_size * 4),
        filter_subjects=c.subjects if len(c.subjects) > 1 else None,
        filter_subject=c.subjects[0] if len(c.subjects) == 1 else None,
    )


def retry_delay(exc: BaseException, delivered: int, settings: ServiceSettings) -> float | None:
    """Seconds before a failed event is tried again, or None when it goes to the DLQ now.

    An outage (TRANSIENT_ERRORS) is retried with exponential backoff until the last allowed
    delivery; anything else is a bug or a bad event, which no retry would change."""
    if isinstance(exc, TRANSIENT_ERRORS) and delivered < settings.max_deliver:
        return settings.retry_backoff_seconds * 2 ** (delivered - 1)
    return None


class _Broker(NatsBroker):
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


class _PullBatches(BatchPullStreamSubscriber):
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


class _FastStreamLog:
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


async def _raw_batch(message: Any) -> list[Msg]:
    """The fetched nats-py messages as they are: the wrapper decodes each one itself, so one
    invalid message is dead-lettered alone (a typed `list[Model]` batch would reject them all)."""
    raw: list[Msg] = message.raw_message
    return raw


@dataclass
class _Running:
    consumer: Consumer
    subscriber: _PullBatches
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
        self.processed = self.db["processed_events"]

    @property
    def _inbox_prefix(self) -> str:
        # With its own user a service may only receive on its own inbox prefix
        # (deploy/nats, shared/nats_auth.py); without one, the client default.
        return f"_INBOX_{self.service}" if self.settings.nats_user else "_INBOX"

    def _make_broker(self) -> NatsBroker:
        s = self.settings
        return _Broker(
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
            logger=_FastStreamLog(),
            description=f"Sarafan {self.service}",
        )

    def _subscribe(self, c: Consumer) -> _PullBatches:
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
            decoder=_raw_batch,
            no_reply=True,
            title=c.name,
            description=f"durable pull consumer {c.name} on {c.stream}",
        )

        # The same subscriber with the project's pull loop (see _PullBatches).
        subscriber.__class__ = _PullBatches
        assert isinstance(subscriber, _PullBatches)
        pending = self.metrics.consumer_pending.labels(self.service, c.name)
        subscriber.on_idle = lambda: pending.set(0)

        # Typed loosely: FastStream's AsyncAPI generator builds a schema from this signature,
        # and nats-py's Msg has none.
        async def consume(msgs: list[Any]) -> None:
            await self._consume(c, msgs)

        consume.__name__ = c.name.replace("-", "_")
        subscriber(consume)
        return subscriber

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background: the service serves HTTP (and writes) while NATS is away."""
        await self.processed.create_index(
            "at", expireAfterSeconds=int(PROCESSED_TTL.total_seconds())
        )
        await self.processed.create_index("at_ms")
        self._running = {c.name: _Running(c, self._subscribe(c)) for c in self.consumers}
        self._main = asyncio.create_task(self._connect_and_run(), name=f"{self.service}-bus")

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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
        if self._stopping.is_set():
            return
        self.js = self.broker.config.connection_state.stream
        log.info("connected to NATS at %s", self.settings.nats_url)
        await self._retry_until_done(self._declare_streams, "declare streams")
        self.streams_ready = True
        for running in self._running.values():
            await self._retry_until_done(
                lambda r=running: self._bind(r), f"bind {running.consumer.name}"
            )
        for hook in self.on_connected:
            await hook()

    async def _retry_until_done(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await step()
                return
            except Exception as exc:
                log.warning("%s failed: %s; retrying", what, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
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

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message of `stream` on `subject` (wildcards allowed); nothing to do
        when the stream does not exist (yet)."""
        js = self._js_or_unavailable()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.purge_stream(stream, subject=subject)

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
            # drop a repeat of the same event inside the duplicate window.
            stream=STREAMS[subject.split(".", 1)[0]],
            timeout=5,
            headers={"Nats-Msg-Id": event.id, "Ce-Type": event.type},
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

    async def _consume(self, c: Consumer, msgs: list[Msg]) -> None:
        """One fetched batch, as FastStream hands it over (in order, one batch at a time)."""
        if not msgs:
            return
        heartbeat = asyncio.create_task(self._keep_in_progress(msgs, self._ack_wait(c) / 3))
        try:
            await self._process(c, msgs)
        except Exception:
            # Never let one bad batch kill the consumer: unacked messages come back.
            log.exception("consumer %s failed on a batch; messages will be redelivered", c.name)
            await asyncio.sleep(0.5)
        finally:
            heartbeat.cancel()
        self.metrics.consumer_pending.labels(self.service, c.name).set(
            msgs[-1].metadata.num_pending
        )

    def _ack_wait(self, c: Consumer) -> float:
        return c.ack_wait or self.settings.ack_wait_seconds

    @staticmethod
    async def _keep_in_progress(msgs: list[Msg], interval: float) -> None:
        """Tell JetStream the batch in hand is being worked on, so a short ack_wait (quick
        redelivery after a crash) does not redeliver a batch that is merely slow."""
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _process(self, c: Consumer, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, CloudEvent, EventData]] = []
        for msg in msgs:
            try:
                envelope, data = parse_event(msg.data)
            except InvalidEvent as exc:
                await self._dead_letter(c, msg, f"invalid event: {exc}", "invalid")
                continue
            decoded.append((msg, envelope, data))
        if not decoded:
            return
        done = (
            await self._already_processed(c, [e.id for _, e, _ in decoded]) if c.dedupe else set()
        )
        fresh = []
        for msg, envelope, data in decoded:
            if envelope.id in done:
                await msg.ack()
                self.metrics.events_consumed.labels(self.service, envelope.type, "duplicate").inc()
            else:
                fresh.append((msg, envelope, data))
        # The same event can arrive twice in one batch (re-published under another msg id).
        unique: dict[str, tuple[Msg, CloudEvent, EventData]] = {}
        for item in fresh:
            if item[1].id in unique:
                await item[0].ack()
                self.metrics.events_consumed.labels(self.service, item[1].type, "duplicate").inc()
            else:
                unique[item[1].id] = item
        fresh = list(unique.values())
        if c.handle_batch is not None and len(fresh) > 1:
            started = time.perf_counter()
            try:
                await c.handle_batch([(e, d) for _, e, d in fresh])
            except Exception as exc:
                log.warning(
                    "batch of %d on %s failed (%s); handling one by one", len(fresh), c.name, exc
                )
            else:
                per_event = (time.perf_counter() - started) / len(fresh)
                await self._mark_processed(c, [e for _, e, _ in fresh])
                for msg, envelope, _ in fresh:
                    await msg.ack()
                    self.metrics.events_consumed.labels(self.service, envelope.type, "ok").inc()
                    self.metrics.handler_seconds.labels(self.service, envelope.type).observe(
                        per_event
                    )
                return
        for msg, envelope, data in fresh:
            await self._process_one(c, msg, envelope, data)

    async def _process_one(
        self, c: Consumer, msg: Msg, envelope: CloudEvent, data: EventData
    ) -> None:
        with event_context(envelope.id, envelope.correlationid):
            started = time.perf_counter()
            try:
                await c.handle(envelope, data)
            except Exception as exc:
                delivered = msg.metadata.num_delivered or 1
                delay = retry_delay(exc, delivered, self.settings)
                if delay is not None:
                    log.warning(
                        "%s failed (attempt %d), retrying in %.1fs: %r",
                        envelope.type,
                        delivered,
                        delay,
                        exc,
                    )
                    await msg.nak(delay=delay)
                    self.metrics.events_consumed.labels(self.service, envelope.type, "retry").inc()
                    return
                transient = isinstance(exc, TRANSIENT_ERRORS)
                log.error(
                    "%s failed for good after %d deliveries: %r",
                    envelope.type,
                    delivered,
                    exc,
                    exc_info=not transient,
                )
                await self._dead_letter(c, msg, f"{type(exc).__name__}: {exc}", envelope.type)
                return
            self.metrics.handler_seconds.labels(self.service, envelope.type).observe(
                time.perf_counter() - started
            )
            await self._mark_processed(c, [envelope])
            await msg.ack()
            self.metrics.events_consumed.labels(self.service, envelope.type, "ok").inc()

    async def _already_processed(self, c: Consumer, event_ids: list[str]) -> set[str]:
        keys = [f"{c.name}:{eid}" for eid in event_ids]
        found = self.processed.find({"_id": {"$in": keys}}, {"_id": 1})
        prefix = len(c.name) + 1
        return {doc["_id"][prefix:] async for doc in found}

    async def _mark_processed(self, c: Consumer, events: list[CloudEvent]) -> None:
        if not c.dedupe:
            return
        now = utcnow()
        at_ms = epoch_ms(now)
        docs = [
            {"_id": f"{c.name}:{e.id}", "type": e.type, "at": now, "at_ms": at_ms} for e in events
        ]
        try:
            await self.processed.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise

    async def _dead_letter(self, c: Consumer, msg: Msg, error: str, event_type: str) -> None:
        """Copy the message with its headers and the reason to DLQ, then ack the original."""
        meta = msg.metadata
        headers = dict(msg.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers.pop("Nats-Expected-Stream", None)
        headers.update(
            {
                # A stable id: a DLQ copy repeated after a crash is de-duplicated by the server.
                "Nats-Msg-Id": f"dlq:{meta.stream}:{meta.sequence.stream}:{c.name}",
                "Sarafan-Dlq-Consumer": c.name,
                "Sarafan-Dlq-Service": self.service,
                "Sarafan-Dlq-Subject": msg.subject,
                "Sarafan-Dlq-Stream": meta.stream,
                "Sarafan-Dlq-Sequence": str(meta.sequence.stream),
                "Sarafan-Dlq-Deliveries": str(meta.num_delivered),
                "Sarafan-Dlq-Error": " ".join(error.split())[:HEADER_MAX],
                "Sarafan-Dlq-At": utcnow().isoformat(),
            }
        )
        try:
            # The original subject ends the DLQ subject (dlq.<service>.<consumer>.<subject>),
            # so erasure can purge a member's dead letters by their id.
            await self.broker.publish(
                msg.data,
                dlq_subject(self.service, c.name, msg.subject),
                stream=DLQ_STREAM,
                headers=headers,
                timeout=5,
            )
        except Exception as exc:
            # Not stored in DLQ: keep the original (redelivered later), never drop it.
            log.error("could not dead-letter %s (%s); will retry", msg.subject, exc)
            await msg.nak(delay=self.settings.retry_backoff_seconds)
            return
        await msg.ack()
        log.error("dead-lettered %s from %s: %s", msg.subject, c.name, error)
        self.metrics.dlq_messages.labels(self.service, c.name).inc()
        self.metrics.events_consumed.labels(self.service, event_type, "dead").inc()
