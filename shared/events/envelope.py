"""The CloudEvents 1.0 envelope (structured mode): building one around event data (with the
correlation id in context), and reading one from a message body."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared import tracing
from shared.events.base import EventData, InvalidEvent, utcnow
from shared.events.registry import REGISTRY, subject_for
from shared.logs import correlation_id_var, key_id_var

SPECVERSION = "1.0"
#: The media type of a CloudEvent in the JSON event format. As the NATS message's content type
#: it says the message is in structured mode: the whole event, attributes and data, is the body.
CLOUDEVENTS_JSON = "application/cloudevents+json"
#: The header naming it. NATS header names are case-insensitive (the CloudEvents NATS binding
#: matches this one so); it is written in lower case, the spelling FastStream used for its own
#: when it published for the bus, so that a message carries it once.
CONTENT_TYPE = "content-type"

#: The largest event a service creates: NATS refuses messages over its max_payload (1 MiB by
#: default) and an event that cannot be published would sit in its outbox for ever. Half of
#: that leaves room for headers and for a server configured lower. A consumer refuses a
#: bigger one without parsing it.
MAX_EVENT_BYTES = 512 * 1024
#: The deepest nesting of objects and arrays an event may have. The deepest event (a member's
#: changed consent inside member-updated) nests four levels; a message nested thousands deep
#: makes a recursive decoder or serializer fail (Python's json raises RecursionError).
MAX_EVENT_DEPTH = 32


class EventTooLarge(ValueError):
    """An event whose JSON is over MAX_EVENT_BYTES: refused before anything is stored (HTTP 422)."""


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode message carrying one Sarafan event."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    specversion: Literal["1.0"]  # required, like id, source and type
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str
    time: datetime
    subject: str = Field(min_length=1)
    datacontenttype: Literal["application/json"] = "application/json"
    #: Extension attributes (optional in CloudEvents 1.0): a reader is liberal about them. A
    #: missing correlationid is the event's own id; a missing dataschemaversion is 1 (the first
    #: version there is: 0 or less is refused).
    dataschemaversion: int = Field(1, ge=1)
    correlationid: str = Field("", description="the request or first event it follows from")
    data: dict[str, Any]

    @model_validator(mode="after")
    def _own_correlation(self) -> CloudEvent:
        if not self.correlationid:
            self.correlationid = self.id
        return self

    @property
    def nats_subject(self) -> str:
        return subject_for(REGISTRY[self.type].service, self.type, self.subject)

    def payload(self) -> EventData:
        """The typed `data`; raises InvalidEvent when it does not match its model."""
        model = REGISTRY.get(self.type)
        if model is None:
            raise InvalidEvent(f"unknown event type {self.type!r}")
        if self.dataschemaversion > model.schema_version:
            raise InvalidEvent(
                f"{self.type} dataschemaversion {self.dataschemaversion} is newer than "
                f"{model.schema_version}, the newest this service understands"
            )
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.type} data invalid: {_errors(exc)}") from exc

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    def nats_headers(self) -> dict[str, str]:
        """The headers it is published with: structured mode, and the id JetStream's duplicate
        window drops a repeat by (the binding's structured mode puts no attribute in a header)."""
        return {"Nats-Msg-Id": self.id, CONTENT_TYPE: CLOUDEVENTS_JSON}


def new_event(
    data: EventData,
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Wrap event data in its envelope.

    The correlation id defaults to the one in context (the HTTP request's, or the cause
    event's inside a handler: see shared.logs.event_context), else the event's own id, so
    every event a request or an event leads to carries the same id without each call site
    passing it. Likewise the trace context (`traceparent`), when tracing is on.
    """
    eid = event_id or str(uuid.uuid4())
    correlation_id = correlation_id or correlation_id_var.get()
    # Which API key's request made it, for the audit (a CloudEvents extension attribute).
    audit = {"keyid": key} if (key := key_id_var.get()) else {}
    event = CloudEvent(
        **audit,
        # The trace it is created in (CloudEvents distributed tracing): empty when tracing is off.
        **tracing.creation_context(correlation_id),
        specversion=SPECVERSION,
        id=eid,
        source=f"/services/{data.service}",
        type=data.event_type,
        time=time or utcnow(),
        subject=data.aggregate_id(),
        dataschemaversion=data.schema_version,
        correlationid=correlation_id or eid,
        data=data.model_dump(mode="json"),
    )
    size = len(event.to_json())
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"{data.event_type} would be {size} bytes, over the {MAX_EVENT_BYTES} an event may be"
        )
    return event


def parse_event(raw: bytes | str) -> tuple[CloudEvent, EventData]:
    """Decode and validate a message body; raises InvalidEvent with a readable reason, and
    nothing else whatever the bytes are (a consumer dead-letters that one message)."""
    try:
        doc = _decode(raw)
        if not isinstance(doc, dict):
            raise InvalidEvent("body is not a JSON object")
        try:
            envelope = CloudEvent.model_validate(doc)
        except ValidationError as exc:
            raise InvalidEvent(f"not a CloudEvent: {_errors(exc)}") from exc
        return envelope, envelope.payload()
    except InvalidEvent:
        raise
    except Exception as exc:  # a RecursionError, a MemoryError: never past this message
        raise InvalidEvent(f"unreadable: {type(exc).__name__}: {exc}") from exc


def _decode(raw: bytes | str) -> Any:
    """JSON with the bounds of an event: its size, its depth, finite numbers only."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"body is {len(raw)} bytes, over the {MAX_EVENT_BYTES} of an event")
    try:
        doc = json.loads(raw, parse_constant=_non_finite, parse_float=_finite)
    except RecursionError as exc:
        raise InvalidEvent(f"body nests deeper than {MAX_EVENT_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    if _depth(doc) > MAX_EVENT_DEPTH:
        raise InvalidEvent(f"body nests deeper than {MAX_EVENT_DEPTH} levels")
    return doc


def _non_finite(token: str) -> float:
    # Python's json reads NaN and Infinity (JSON has neither); an event may not carry them.
    raise ValueError(f"{token} is not a number JSON allows")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{token} is out of range")
    return value


def _depth(doc: Any) -> int:
    """How deep objects and arrays nest in `doc` (a scalar is 0), without recursion; stops
    counting past MAX_EVENT_DEPTH."""
    deepest, todo = 0, [(doc, 1)]
    while todo and deepest <= MAX_EVENT_DEPTH:
        node, depth = todo.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if isinstance(children, list):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
    )
