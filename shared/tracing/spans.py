"""The hooks: trace context carried by events, headers and documents, and the spans of a
publish, a consumed message and a channel send (see the package's text)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.logs import event_id_var, redact
from shared.tracing.provider import state, tracer

#: The W3C Trace Context fields, in the envelope, in NATS headers and in HTTP headers.
FIELDS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_FIELDS: Mapping[str, str] = MappingProxyType({})
#: Inside a batch handler: the consumer span of each event of the batch, by event id and by
#: correlation id, so what the handler creates for one event joins that event's trace.
_batch: ContextVar[Mapping[str, Span] | None] = ContextVar("sarafan_trace_batch", default=None)


def fields_of(span: Span) -> dict[str, str]:
    """`traceparent` (and `tracestate`) naming `span`; empty for no valid span."""
    if not span.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier


def context_from(*carriers: Mapping[str, Any] | None) -> Context | None:
    """The context the first carrier with a valid `traceparent` names (headers, an envelope,
    a stored document); None when none does. Never raises: a value that is no string or no
    W3C traceparent is ignored (a new trace starts)."""
    for carrier in carriers:
        if not carrier:
            continue
        text = {k: v for k in FIELDS if isinstance(v := carrier.get(k), str)}
        found = _PROPAGATOR.extract(text)
        if trace.get_current_span(found).get_span_context().is_valid:
            return found
    return None


def _envelope_fields(event: Any) -> Mapping[str, Any]:
    return getattr(event, "model_extra", None) or {}


def creation_context(correlation_id: str | None = None) -> Mapping[str, str]:
    """The envelope attributes of an event created now (`new_event`): the current span's
    context, or inside a batch handler the consumer span of the event being handled."""
    if not state.processors:
        return _NO_FIELDS
    batch = _batch.get()
    if batch:
        span = batch.get(event_id_var.get() or "") or batch.get(correlation_id or "")
        if span is not None:
            return fields_of(span)
    return fields_of(trace.get_current_span())


def _cause_context(cause: Any) -> Context | None:
    """The parent for work done for `cause` (a CloudEvent): the span consuming it in this
    batch, else the current span, else the context the event carries."""
    batch = _batch.get()
    if batch and (span := batch.get(cause.id)) is not None:
        return trace.set_span_in_context(span)
    if trace.get_current_span().get_span_context().is_valid:
        return None
    return context_from(_envelope_fields(cause)) or Context()


def context_of(cause: Any) -> Mapping[str, str]:
    """Fields to keep in a document made for `cause` (a delivery sent later): `continued`
    resumes its trace from them."""
    if not state.processors:
        return _NO_FIELDS
    found = _cause_context(cause)
    return fields_of(trace.get_current_span(found))


class _Continued:
    def __init__(self, stored: Mapping[str, Any]) -> None:
        self.stored = stored
        self.token: object | None = None

    def __enter__(self) -> None:
        if state.processors and (found := context_from(self.stored)) is not None:
            self.token = otel_context.attach(found)

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            otel_context.detach(self.token)


def continued(stored: Mapping[str, Any]) -> _Continued:
    """Within: the trace of a document that kept its cause's context (`context_of`)."""
    return _Continued(stored)


# -- spans --------------------------------------------------------------------------------------


class Spans:
    """The spans of one hook, for marking how it ended (nothing when tracing is off)."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans

    def __enter__(self) -> Spans:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def outcome(self, outcome: str) -> None:
        for span in self.spans:
            span.set_attribute("sarafan.outcome", outcome)

    def failed(self, error: BaseException | str) -> None:
        """An error status (and for an exception, its event) with the error redacted."""
        if isinstance(error, BaseException):
            kind, text = type(error).__name__, redact(str(error))
            for span in self.spans:
                span.add_event("exception", {"exception.type": kind, "exception.message": text})
                span.set_attribute("error.type", kind)
            error = f"{kind}: {text}"
        for span in self.spans:
            span.set_status(Status(StatusCode.ERROR, redact(error)[:500]))


_NOTHING = Spans([])


def _template(subject: str) -> str:
    # <service>.<type>.<aggregate id>: the id is the high-cardinality part.
    head, _, _ = subject.rpartition(".")
    return f"{head}.*" if head else subject


def _message_attributes(subject: str, event: Any, operation: str, kind: str) -> dict[str, Any]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.destination.template": _template(subject),
        "messaging.operation.type": kind,
        "messaging.operation.name": operation,
        "messaging.message.id": event.id,
        "messaging.message.conversation_id": event.correlationid,
        # The event's id and subject are the message id and the destination already.
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
    }


def current_fields() -> Mapping[str, str]:
    """`traceparent` (and `tracestate`) of the current span: the headers of a message sent
    now (the hop), empty when tracing is off or no span is current."""
    if not state.processors:
        return _NO_FIELDS
    return fields_of(trace.get_current_span())


def publishing(service: str, event: Any) -> Any:
    """Around one publish of an outbox event: a producer span, current within, child of the
    context the event was created in (a new trace when it has none)."""
    if not state.processors:
        return _NOTHING
    return _publishing(service, event)


@contextmanager
def _publishing(service: str, event: Any) -> Iterator[Spans]:
    try:
        subject = event.nats_subject
    except Exception:  # an entry of an unknown type: the publish itself says why
        subject = f"{event.type}.{event.subject}"
    span = tracer(service).start_span(
        f"publish {_template(subject)}",
        context=context_from(_envelope_fields(event)) or Context(),
        kind=SpanKind.PRODUCER,
        attributes=_message_attributes(subject, event, "publish", "send"),
    )
    with ending([span]) as spans, as_current(span):
        yield spans


def as_current(span: Span) -> Any:
    # Exceptions are recorded by `ending`, redacted.
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _consumer_span(spans_of: trace.Tracer, consumer: str, msg: Any, event: Any, batch: int) -> Span:
    headers = msg.headers if isinstance(msg.headers, Mapping) else None
    created = context_from(_envelope_fields(event))
    parent = context_from(headers) or created
    links = []
    if created is not None and parent is not created:
        # The hop came from elsewhere (a replay, another producer): keep the creation too.
        made = trace.get_current_span(created).get_span_context()
        if made.trace_id != trace.get_current_span(parent).get_span_context().trace_id:
            links.append(Link(made))
    attributes = _message_attributes(msg.subject, event, "process", "process")
    attributes["messaging.consumer.group.name"] = consumer
    attributes["messaging.message.body.size"] = len(msg.data or b"")
    if batch > 1:
        attributes["messaging.batch.message_count"] = batch
    return spans_of.start_span(
        f"process {_template(msg.subject)}",
        context=parent or Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )


def processing(service: str, consumer: str, msg: Any, event: Any) -> Any:
    """Around handling one message (a NATS message and its CloudEvent): a consumer span,
    current within, child of the publish (header), else of the event's creation, else new."""
    if not state.processors:
        return _NOTHING
    return _processing(service, consumer, msg, event)


@contextmanager
def _processing(service: str, consumer: str, msg: Any, event: Any) -> Iterator[Spans]:
    span = _consumer_span(tracer(service), consumer, msg, event, 1)
    with ending([span]) as spans, as_current(span):
        yield spans


def processing_batch(service: str, consumer: str, items: list[tuple[Any, Any]]) -> Any:
    """Around a batch handler: a consumer span per (message, event), each in its own trace;
    what the handler does for one event (`creation_context`, `sending`) joins that span."""
    if not state.processors:
        return _NOTHING
    return _processing_batch(service, consumer, items)


@contextmanager
def _processing_batch(service: str, consumer: str, items: list[tuple[Any, Any]]) -> Iterator[Spans]:
    own = tracer(service)
    spans = [_consumer_span(own, consumer, m, e, len(items)) for m, e in items]
    found: dict[str, Span] = {}
    for (_, event), span in zip(items, spans, strict=True):
        found.setdefault(event.id, span)
        found.setdefault(event.correlationid, span)
    token = _batch.set(found)
    try:
        with ending(spans) as marks:
            yield marks
    finally:
        _batch.reset(token)


def sending(
    service: str,
    channel: str,
    causes: Iterable[Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Around a channel's send: a client span under the current context; or, given the causes
    of what is written at once (the in-app store of a fan-out), one span in each cause's trace
    (none for no cause)."""
    if not state.processors:
        return _NOTHING
    return _sending(service, channel, causes, attributes or {})


@contextmanager
def _sending(
    service: str, channel: str, causes: Iterable[Any] | None, attributes: Mapping[str, Any]
) -> Iterator[Spans]:
    own = tracer(service)
    attributes = {"sarafan.channel": channel, **attributes}
    parents: list[Context | None] = [None]
    if causes is not None:
        distinct = {cause.id: cause for cause in causes}
        parents = [_cause_context(cause) for cause in distinct.values()]
    spans = [
        own.start_span(f"send {channel}", context=p, kind=SpanKind.CLIENT, attributes=attributes)
        for p in parents
    ]
    with ending(spans) as marks:
        yield marks


@contextmanager
def ending(spans: list[Span]) -> Iterator[Spans]:
    """Yield the spans' marks; an exception escaping marks them failed; all end on exit."""
    marks = Spans(spans)
    try:
        yield marks
    except BaseException as exc:
        marks.failed(exc)
        raise
    finally:
        for span in spans:
            span.end()
