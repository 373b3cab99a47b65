"""What a consumer accepts of a message: an event bound to the subject it arrived on and to its
producer, about the aggregate its subject names, with no time later than the receiver's clock.

JetStream's permissions say who may publish on a subject, not what the body says. A body is
only believed when it agrees with where it travelled: its type is one the consumer declared, its
`source` is the service owning the stream it came from, the NATS subject is exactly
`<service>.<type>.<envelope subject>`, and its data names that same aggregate. Anything else
(and anything that does not decode) is an `InvalidEvent`, which the consumer dead-letters alone.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from shared.events.base import EventData, InvalidEvent, aware, clamp_fact_times
from shared.events.envelope import CloudEvent, parse_event
from shared.events.registry import stream_owner, subject_for


def receive(
    raw: bytes | str,
    *,
    subject: str,
    stream: str,
    types: Collection[str],
    latest: datetime,
) -> tuple[CloudEvent, EventData]:
    """The event a consumer of `types` on `stream` acts on, from a message that arrived on
    `subject`: decoded, bound (see the module's text) and with every fact time (and the
    envelope's `time`) at most `latest`. Raises InvalidEvent, and nothing else, with the reason."""
    envelope, data = parse_event(raw)
    check_binding(envelope, data, subject=subject, stream=stream, types=types)
    return clamp_times(envelope, data, latest)


def check_binding(
    envelope: CloudEvent,
    data: EventData,
    *,
    subject: str,
    stream: str,
    types: Collection[str],
) -> None:
    """Raise InvalidEvent unless the event is bound to its subject, stream and producer."""
    kind = envelope.type
    if kind not in types:
        raise InvalidEvent(
            f"type {kind!r} is not one this consumer handles ({', '.join(sorted(types))})"
        )
    producer = data.service
    if stream_owner(stream) != producer:
        raise InvalidEvent(f"{kind} is published by {producer}, not on stream {stream}")
    if envelope.source != f"/services/{producer}":
        raise InvalidEvent(
            f"source {envelope.source!r} is not /services/{producer}, the producer of {kind}"
        )
    try:
        expected = subject_for(producer, kind, envelope.subject)
    except ValueError as exc:
        raise InvalidEvent(f"envelope subject: {exc}") from exc
    if subject != expected:
        raise InvalidEvent(
            f"arrived on {subject!r}; a {kind} about {envelope.subject!r} is on {expected!r}"
        )
    if data.aggregate_id() != envelope.subject:
        raise InvalidEvent(
            f"data names {data.aggregate_field} {data.aggregate_id()!r}, "
            f"the envelope's subject is {envelope.subject!r}"
        )


def clamp_times(
    envelope: CloudEvent, data: EventData, latest: datetime
) -> tuple[CloudEvent, EventData]:
    """The envelope's `time` and the data's fact times at most `latest`; the envelope's `data`
    says the same as the clamped model. Plans (a campaign's end) are left as they are."""
    update: dict[str, Any] = {}
    if aware(envelope.time) > latest:
        update["time"] = latest
    clamped = clamp_fact_times(data, latest)
    if clamped is not data:
        changed = {n for n in data.fact_times() if getattr(clamped, n) != getattr(data, n)}
        update["data"] = {**envelope.data, **clamped.model_dump(mode="json", include=changed)}
    return (envelope.model_copy(update=update) if update else envelope), clamped
