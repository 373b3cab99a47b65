"""The dead-letter queue for the operator: `sarafan dlq list` and `sarafan dlq replay`.

A dead letter's own subject says what failed: `dlq.<service>.<consumer>.<original subject>`. Its
`Sarafan-Dlq-*` headers are only information, written by whoever published it, and every
service's NATS user may publish on `dlq.<service>.>`: a replay (which runs as the operator, who
may publish anywhere) never goes where a header says. It re-publishes a dead letter only

- to the original subject its own subject ends with, when that is `<service>.<type>.<id>` of a
  known service and a type that service publishes (never a `$` or `_` subject: a key-value
  bucket, the JetStream API, an inbox);
- into that service's stream (`Nats-Expected-Stream`: JetStream refuses anything else);
- when its bytes are exactly the message that stream still holds on that subject at the
  sequence the dead letter names: a replay delivers again what the producer published, it
  never publishes something new in the operator's name.

Anything else is refused with the reason, and stays in the DLQ.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sarafan.ops import table
from shared.events import REGISTRY
from shared.topology import DLQ_STREAM, SERVICES, STREAMS

DLQ_HEADER = "Sarafan-Dlq-"


class Refused(ValueError):
    """A dead letter that is not replayed; the message says why."""


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control characters shown as escapes (a dead letter's
    subject and headers are written by whoever published it)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def original_subject(dlq_subject: str) -> str:
    """The subject a dead letter came from: `dlq.<service>.<consumer>.` stripped."""
    parts = dlq_subject.split(".", 3)
    return parts[3] if len(parts) == 4 and parts[0] == "dlq" else ""


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ entry: what failed (the original subject), where (stream, consumer), why."""

    id: int  # sequence in the DLQ stream
    subject: str  # the original subject, from the dead letter's own subject
    event_type: str
    stream: str
    stream_sequence: str
    service: str
    consumer: str
    deliveries: str
    error: str
    at: str

    @classmethod
    def from_message(
        cls, seq: int, dlq_subject: str, headers: Mapping[str, str] | None, data: bytes
    ) -> DeadLetter:
        h = dict(headers or {})
        # The event's own type (structured mode: it is in the body), else the one its subject
        # names; older dead letters' `Ce-Type` header is not needed for either.
        kind: Any = ""
        with contextlib.suppress(ValueError, AttributeError, RecursionError):
            kind = json.loads(data).get("type", "")
        parts = dlq_subject.split(".", 3)
        if not kind and len(parts) == 4:
            kind = parts[3].partition(".")[2].partition(".")[0]
        return cls(
            id=seq,
            subject=original_subject(dlq_subject) or "?",
            event_type=str(kind) or "?",
            stream=h.get(f"{DLQ_HEADER}Stream", "?"),
            stream_sequence=h.get(f"{DLQ_HEADER}Sequence", "?"),
            service=parts[1] if len(parts) == 4 else "?",
            consumer=parts[2] if len(parts) == 4 else "?",
            deliveries=h.get(f"{DLQ_HEADER}Deliveries", "?"),
            error=h.get(f"{DLQ_HEADER}Error", ""),
            at=h.get(f"{DLQ_HEADER}At", ""),
        )


async def dlq_entries(nc: NatsClient) -> list[DeadLetter]:
    """Every entry in the DLQ stream, oldest first (an ephemeral consumer, nothing acked)."""
    js = nc.jetstream(timeout=5)
    try:
        info = await js.stream_info(DLQ_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    if not info.state.messages:
        return []
    sub = await js.pull_subscribe(
        "dlq.>",
        stream=DLQ_STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    entries: list[DeadLetter] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=2)
            except nats.errors.TimeoutError:
                break
            for msg in msgs:
                entries.append(
                    DeadLetter.from_message(
                        msg.metadata.sequence.stream, msg.subject, msg.headers, msg.data
                    )
                )
            if not msgs or msgs[-1].metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return entries


def dlq_table(entries: Sequence[DeadLetter]) -> str:
    if not entries:
        return "the dead-letter queue is empty"
    rows = [("ID", "AT", "CONSUMER", "TYPE", "SUBJECT", "TRIES", "ERROR")]
    rows += [
        (
            str(e.id),
            e.at[:19].replace("T", " "),
            e.consumer,
            e.event_type,
            e.subject,
            e.deliveries,
            e.error if len(e.error) <= 80 else e.error[:77] + "...",
        )
        for e in entries
    ]
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    return table(rows) + f"\n{len(entries)} dead letter(s); `sarafan dlq replay ID|--all`"


# -- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """What became of one dead letter: replayed to `subject`, or `refused` with the reason."""

    id: int
    subject: str = ""
    refused: str = ""


@dataclass(frozen=True)
class Target:
    """Where a dead letter may be replayed: the original subject, its stream and sequence."""

    subject: str
    stream: str
    sequence: int


def replay_target(dlq_subject: str, headers: Mapping[str, str] | None) -> Target:
    """Where the dead letter on `dlq_subject` may go back to; raises Refused (see the module)."""
    h = dict(headers or {})
    parts = dlq_subject.split(".")
    if len(parts) < 4 or parts[0] != "dlq" or parts[1] not in SERVICES:
        raise Refused(f"{dlq_subject!r} is not a service's dead letter")
    original = ".".join(parts[3:])
    if len(parts) != 6:
        raise Refused(f"{original!r} is not an event subject <service>.<type>.<id>")
    service, kind, _ = parts[3:]
    if service not in SERVICES or REGISTRY.get(kind) is None or REGISTRY[kind].service != service:
        raise Refused(f"{original!r} is not an event subject: {service} publishes no {kind!r}")
    stream = STREAMS[service]
    named = h.get(f"{DLQ_HEADER}Stream", "")
    if named != stream:
        raise Refused(f"it names stream {named!r}; events on {original} are in {stream}")
    sequence = h.get(f"{DLQ_HEADER}Sequence", "")
    if not sequence.isdigit() or int(sequence) < 1:
        raise Refused(f"it names no sequence in {stream} ({sequence!r})")
    return Target(original, stream, int(sequence))


async def dlq_replay(nc: NatsClient, ids: Sequence[int] | None) -> list[Replay]:
    """Re-publish entries (all when `ids` is None) to their original subject with a fresh
    message id, each deleted from DLQ only after the PubAck; refuse, and keep, the ones that
    may not go back (see the module's text). Consumers that had already handled the event
    skip it (they de-duplicate by event id)."""
    js = nc.jetstream(timeout=5)
    if ids is None:
        ids = [e.id for e in await dlq_entries(nc)]
    return [await _replay_one(js, seq) for seq in ids]


async def _replay_one(js: Any, seq: int) -> Replay:
    try:
        msg = await js.get_msg(DLQ_STREAM, seq)
    except nats.js.errors.NotFoundError:
        return Replay(seq, refused=f"no dead letter with id {seq} (see `sarafan dlq list`)")
    try:
        target = replay_target(msg.subject or "", msg.headers)
        original = await _stored(js, target)
        if original.data != (msg.data or b""):
            raise Refused(f"it is not the message {target.stream} holds at {target.sequence}")
    except Refused as exc:
        return Replay(seq, refused=str(exc))
    # The producer's own headers, its content type included: the message goes back as it was
    # published (an event from before the content type was set, without it: readers take both).
    headers = {
        k: v
        for k, v in (original.headers or {}).items()
        if not k.startswith(DLQ_HEADER) and not k.startswith("Nats-")
    }
    headers["Nats-Msg-Id"] = f"replay:{uuid.uuid4()}"
    headers["Sarafan-Replayed-From"] = f"{DLQ_STREAM}:{seq}"
    # stream= sends Nats-Expected-Stream: JetStream stores it there or refuses it.
    await js.publish(target.subject, original.data, stream=target.stream, headers=headers)
    await js.delete_msg(DLQ_STREAM, seq)
    return Replay(seq, subject=target.subject)


async def _stored(js: Any, target: Target) -> Any:
    """The message the stream holds at the target's sequence, when it is on its subject."""
    try:
        original = await js.get_msg(target.stream, target.sequence)
    except nats.js.errors.NotFoundError as exc:
        raise Refused(
            f"{target.stream} no longer holds {target.sequence} (erased or purged)"
        ) from exc
    if original.subject != target.subject:
        raise Refused(f"{target.stream} holds {target.sequence} on another subject")
    return original
