"""The consumer wrapper: what becomes of each message a durable consumer fetches.

Every message is decoded, validated and checked against where it travelled on its own
(`shared.events.receive`: a type the consumer declared, from the service owning the stream, on
exactly its subject, naming that aggregate, its times clamped to the receiver's clock); one that
fails, whatever the failure, goes to the DLQ alone and holds back nothing. Valid ones are
de-duplicated against `processed_events`, handed to the batch handler with the other fresh
ones (one by one when that fails), then acked, retried with a backoff from its delivery count,
or dead-lettered with its headers and the reason. A long batch sends in-progress acks so it is
not redelivered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared import tracing
from shared.clock import Clock
from shared.events import CloudEvent, EventData, InvalidEvent, carried_by, receive, utcnow
from shared.logs import event_context
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from shared.store import TRANSIENT_DB_ERRORS, epoch_ms, is_duplicate_key, only_duplicates
from shared.topology import DLQ_STREAM

log = logging.getLogger("sarafan.bus")

PROCESSED_TTL = timedelta(days=7)
HEADER_MAX = 1000


def dlq_subject(service: str, consumer: str, original: str) -> str:
    return f"dlq.{service}.{consumer}.{original}"


class TransientError(Exception):
    """A failure that may pass by itself (a peer away, a timeout): the message is retried."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,
    ConnectionError,
    nats.errors.Error,
    *TRANSIENT_DB_ERRORS,
)

Handler = Callable[[CloudEvent, EventData], Awaitable[None]]
BatchHandler = Callable[[list[tuple[CloudEvent, EventData]]], Awaitable[None]]
#: Publishes bytes to a stream and waits for the PubAck: (subject, data, stream, headers).
RawPublish = Callable[[str, bytes, str, dict[str, str]], Awaitable[object]]


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
    #: A consumer whose every effect is itself keyed by the event (docs/patterns.md, 2) may turn
    #: it off to save two database round trips per batch; duplicates then change nothing.
    dedupe: bool = True
    #: Seconds before an unacknowledged message is redelivered (after a crash); None takes
    #: SARAFAN_ACK_WAIT_SECONDS. A handler may run longer: the wrapper sends in-progress acks.
    ack_wait: float | None = None
    #: The event types the handler acts on, as declared (the AsyncAPI document's messages);
    #: empty means every type its subjects carry. Any other type is dead-lettered.
    types: tuple[type[EventData], ...] = ()
    #: The names of the types it accepts (from `types`, else from its subjects).
    accepts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.accepts = frozenset(m.event_type for m in self.types or carried_by(self.subjects))


def consumer_config(c: Consumer, settings: ServiceSettings) -> ConsumerConfig:
    """The durable's configuration on the server, the same on every start (see `PullLoop.bind`)."""
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


class ConsumerWrapper:
    """Settles each fetched message of a service's consumers (see the module's text)."""

    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        metrics: Metrics,
        processed: AsyncCollection[dict[str, Any]],
        publish: RawPublish,
        clock: Clock = utcnow,
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        #: One record per (consumer, event) processed, kept PROCESSED_TTL: the dedupe.
        self.processed = processed
        #: How dead letters are published (`Bus.publish_raw`).
        self.publish = publish
        #: The receiver's clock: no time an event states is later than it plus the tolerance.
        self.clock = clock

    async def consume(self, c: Consumer, msgs: list[Msg]) -> None:
        """One fetched batch, as the pull loop hands it over (in order, one batch at a time)."""
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

    def _receive(self, c: Consumer, msg: Msg) -> tuple[CloudEvent, EventData] | str:
        """The event in `msg` as this consumer may act on it, or why it may not. Total: no
        exception escapes, so one bad message can never hold back the rest of its batch."""
        try:
            latest = self.clock() + timedelta(seconds=self.settings.event_clock_tolerance_seconds)
            return receive(
                msg.data, subject=msg.subject, stream=c.stream, types=c.accepts, latest=latest
            )
        except InvalidEvent as exc:
            return f"invalid event: {exc}"
        except Exception as exc:
            return f"invalid event: unreadable: {type(exc).__name__}: {exc}"

    async def _process(self, c: Consumer, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, CloudEvent, EventData]] = []
        for msg in msgs:
            received = self._receive(c, msg)
            if isinstance(received, str):
                await self._dead_letter(c, msg, received, "invalid")
            else:
                decoded.append((msg, *received))
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
        if c.handle_batch is not None and len(fresh) > 1 and await self._process_batch(c, fresh):
            return
        for msg, envelope, data in fresh:
            await self._process_one(c, msg, envelope, data)

    async def _process_batch(
        self, c: Consumer, fresh: list[tuple[Msg, CloudEvent, EventData]]
    ) -> bool:
        """The batch handler over every fresh event at once; False when it failed (the caller
        handles them one by one)."""
        started = time.perf_counter()
        items = [(msg, envelope) for msg, envelope, _ in fresh]
        with tracing.processing_batch(self.service, c.name, items) as spans:
            try:
                await c.handle_batch([(e, d) for _, e, d in fresh])
            except Exception as exc:
                spans.failed(exc)
                spans.outcome("handled one by one")
                log.warning(
                    "batch of %d on %s failed (%s); handling one by one", len(fresh), c.name, exc
                )
                return False
            per_event = (time.perf_counter() - started) / len(fresh)
            await self._mark_processed(c, [e for _, e, _ in fresh])
            for msg, envelope, _ in fresh:
                await msg.ack()
                self.metrics.events_consumed.labels(self.service, envelope.type, "ok").inc()
                self.metrics.handler_seconds.labels(self.service, envelope.type).observe(per_event)
            spans.outcome("ok")
        return True

    async def _process_one(
        self, c: Consumer, msg: Msg, envelope: CloudEvent, data: EventData
    ) -> None:
        with (
            event_context(envelope.id, envelope.correlationid),
            tracing.processing(self.service, c.name, msg, envelope) as span,
        ):
            started = time.perf_counter()
            try:
                await c.handle(envelope, data)
            except Exception as exc:
                span.failed(exc)
                delivered = msg.metadata.num_delivered or 1
                delay = retry_delay(exc, delivered, self.settings)
                span.outcome("retry" if delay is not None else "dead")
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
            span.outcome("ok")
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
        # The message as it came, its content type included: a dead letter may be no CloudEvent.
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
            await self.publish(
                dlq_subject(self.service, c.name, msg.subject), msg.data, DLQ_STREAM, headers
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
