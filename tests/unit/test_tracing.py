"""The tracing hooks without servers: when tracing is on, how the trace context goes into events,
headers and documents and comes back out, and which span is whose parent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.events import MemberJoined, MemberLeft, new_event, parse_event, utcnow
from shared.logs import event_context

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
ELSEWHERE = "00-1bf7651916cd43dd8448eb211c80319d-c7ad6b7169203332-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.install(None)


def joined(member_id: str = "m_1") -> Any:
    return new_event(MemberJoined.model_validate({**MemberJoined.example, "member_id": member_id}))


def message(event: Any, headers: dict[str, Any] | None = None) -> Any:
    """What the consumer hooks read of a NATS message (nats-py's Msg has these attributes)."""
    return SimpleNamespace(subject=event.nats_subject, headers=headers, data=event.to_json())


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def traceparent_of(span: Any) -> str:
    c = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


def test_tracing_is_off_unless_an_exporter_is_set_up_by_the_standard_variables():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing.processors_from({}) == []
    assert tracing.processors_from({"OTEL_SERVICE_NAME": "x"}) == []
    assert tracing.processors_from({**endpoint, "OTEL_SDK_DISABLED": "true"}) == []
    assert tracing.processors_from({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == []
    # Only OTLP over HTTP is shipped: gRPC is refused (logged), not half-configured.
    assert tracing.processors_from({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == []
    for environ in (
        endpoint,
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
        {"OTEL_TRACES_EXPORTER": "console"},
    ):
        found = tracing.processors_from(environ)
        assert [type(p) for p in found] == [BatchSpanProcessor], environ
        for processor in found:
            processor.shutdown()


def test_while_tracing_is_off_events_carry_no_trace_context_even_inside_a_span():
    assert not tracing.enabled()
    other = TracerProvider().get_tracer("elsewhere")  # someone else's tracing, not ours
    with other.start_as_current_span("theirs"):
        event = joined()
        assert "traceparent" not in event.model_dump(mode="json")
        assert tracing.current_fields() == {}
        with tracing.publishing("members", event), tracing.sending("notifier", "email") as span:
            span.failed("nothing recorded")
        assert tracing.context_of(event) == {}


def test_an_event_created_in_a_span_carries_its_traceparent_and_tracestate_through_json(spans):
    caller = tracing.context_from({"traceparent": CALLER, "tracestate": "vendor=1"})
    tracer = trace.get_tracer("test", tracer_provider=TracerProvider())
    with tracer.start_as_current_span("request", context=caller) as span:
        event = joined()
    assert event.model_extra["traceparent"] == traceparent_of(span)
    assert event.model_extra["tracestate"] == "vendor=1"
    envelope, _ = parse_event(event.to_json())
    assert envelope.model_extra["traceparent"] == traceparent_of(span)
    assert int(envelope.model_extra["traceparent"][3:35], 16) == CALLER_TRACE


def test_a_publish_is_a_child_of_the_event_creation_and_its_span_travels_in_the_headers(spans):
    created = new_event(MemberLeft(member_id="m_1", left_at=utcnow()))
    created = created.model_copy(update={"traceparent": CALLER})
    with tracing.publishing("members", created):
        hop = dict(tracing.current_fields())
    (publish,) = named(spans, "publish members.member-left.*")
    assert publish.kind == SpanKind.PRODUCER
    assert publish.context.trace_id == CALLER_TRACE
    assert publish.parent.span_id == 0xB7AD6B7169203331
    assert hop == {"traceparent": traceparent_of(publish)}
    assert publish.resource.attributes["service.name"] == "sarafan-members"
    # An event from before tracing was on (none in its envelope) starts its own trace.
    with tracing.publishing("members", joined()):
        pass
    (alone,) = named(spans, "publish members.member-joined.*")
    assert alone.parent is None


def test_a_consumer_continues_the_header_then_the_envelope_then_starts_a_new_trace(spans):
    event = joined().model_copy(update={"traceparent": CALLER})
    cases = {
        "header": message(event, {"traceparent": ELSEWHERE}),
        "envelope": message(event, {"Nats-Msg-Id": "x"}),
        "nothing": message(joined("m_2"), None),
    }
    for name, msg in cases.items():
        envelope = event if name != "nothing" else joined("m_2")
        with tracing.processing("notifier", "notifier-members", msg, envelope) as span:
            span.outcome(name)
    found = {s.attributes["sarafan.outcome"]: s for s in spans.get_finished_spans()}
    assert found["header"].parent.span_id == 0xC7AD6B7169203332
    # The hop came from another trace: the event's creation is kept as a link.
    assert [link.context.trace_id for link in found["header"].links] == [CALLER_TRACE]
    assert found["envelope"].parent.span_id == 0xB7AD6B7169203331
    assert found["envelope"].links == ()
    assert found["nothing"].parent is None
    assert found["nothing"].kind == SpanKind.CONSUMER
    assert found["nothing"].attributes["messaging.consumer.group.name"] == "notifier-members"


@pytest.mark.parametrize(
    "value", [5, None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", ["x"], {"a": 1}]
)
def test_a_traceparent_that_is_no_w3c_string_is_ignored_and_a_new_trace_starts(spans, value):
    assert tracing.context_from({"traceparent": value}) is None
    body = joined().model_dump(mode="json") | {"traceparent": value}
    envelope, _ = parse_event(json.dumps(body))  # the envelope stays readable
    with tracing.processing("notifier", "n", message(envelope, {"traceparent": value}), envelope):
        pass
    (span,) = spans.get_finished_spans()
    assert span.parent is None


def test_in_a_batch_each_event_has_its_own_consumer_span_and_what_it_makes_joins_that_trace(spans):
    first = joined("m_1").model_copy(update={"traceparent": CALLER})
    second = joined("m_2").model_copy(update={"traceparent": ELSEWHERE})
    items = [(message(first), first), (message(second), second)]
    with tracing.processing_batch("notifier", "notifier-members", items) as batch:
        by_correlation = new_event(MemberLeft(member_id="m_1", left_at=utcnow()),
                                   correlation_id=first.correlationid)  # fmt: skip
        with event_context(second.id, second.correlationid):
            in_context = new_event(MemberLeft(member_id="m_2", left_at=utcnow()))
        stored = tracing.context_of(second)
        with tracing.sending("notifier", "inapp", [first, second, first]):
            pass
        with tracing.sending("notifier", "inapp", []):
            pass  # nothing written: no span
        batch.outcome("ok")
    consumed = {
        s.context.trace_id: s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER
    }
    one, two = consumed[CALLER_TRACE], consumed[0x1BF7651916CD43DD8448EB211C80319D]
    assert one.attributes["messaging.batch.message_count"] == 2
    assert by_correlation.model_extra["traceparent"] == traceparent_of(one)
    assert in_context.model_extra["traceparent"] == traceparent_of(two)
    assert stored == {"traceparent": traceparent_of(two)}
    sends = named(spans, "send inapp")
    assert sorted(s.parent.span_id for s in sends) == sorted(
        [one.context.span_id, two.context.span_id]
    )
    assert all(s.kind == SpanKind.CLIENT for s in sends)


def test_a_stored_context_is_resumed_for_a_later_send(spans):
    with tracing.continued({"traceparent": CALLER, "channel": "email"}):
        with tracing.sending("notifier", "email", attributes={"sarafan.attempt": 2}) as span:
            span.failed("SMTP 451 try later")
        event = new_event(MemberLeft(member_id="m_1", left_at=utcnow()))
    with tracing.continued({}):
        assert not trace.get_current_span().get_span_context().is_valid
    (send,) = named(spans, "send email")
    assert send.parent.span_id == 0xB7AD6B7169203331
    assert send.status.status_code == StatusCode.ERROR
    assert send.attributes["sarafan.attempt"] == 2
    # An event made after the send (notification-sent) is in the same trace.
    assert event.model_extra["traceparent"] == CALLER


def test_a_failure_is_recorded_without_contact_data_or_secrets(spans):
    with pytest.raises(ValueError), tracing.sending("notifier", "email"):
        raise ValueError("550 <anna@example.org> refused; password=hunter2")
    (send,) = named(spans, "send email")
    texts = [send.status.description, *(e.attributes["exception.message"] for e in send.events)]
    assert all("anna@example.org" not in t and "hunter2" not in t for t in texts)
    assert "<email>" in send.status.description
    assert send.attributes["error.type"] == "ValueError"


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(tracing.TraceRequests, service="members")

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> JSONResponse:
        return JSONResponse({"id": thing_id}, headers={"X-Correlation-Id": "req-1"})

    @app.get("/v1/boom")
    async def boom() -> JSONResponse:
        return JSONResponse({"error": {}}, status_code=503)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def test_a_request_gets_a_server_span_named_by_its_route_continuing_the_callers_trace(spans):
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (
            await client.get("/v1/things/t1", headers={"traceparent": CALLER})
        ).status_code == 200
        assert (await client.get("/v1/boom")).status_code == 503
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"GET /v1/things/{thing_id}", "GET /v1/boom", "GET"}  # no probe
    thing = by_name["GET /v1/things/{thing_id}"]
    assert thing.kind == SpanKind.SERVER
    assert thing.context.trace_id == CALLER_TRACE and thing.parent.span_id == 0xB7AD6B7169203331
    assert thing.attributes["http.route"] == "/v1/things/{thing_id}"
    assert thing.attributes["http.response.status_code"] == 200
    assert thing.attributes["sarafan.correlation_id"] == "req-1"
    assert by_name["GET /v1/boom"].status.status_code == StatusCode.ERROR
    assert by_name["GET /v1/boom"].parent is None  # no traceparent: a new trace
    assert by_name["GET"].status.status_code != StatusCode.ERROR  # a 404 is the caller's
    # The path as sent is never kept (a check-in page's or unsubscribe link's token is one).
    assert thing.attributes["url.path"] == "/v1/things/{thing_id}"
    assert by_name["GET"].attributes["url.path"] == "unmatched"
    assert not any(
        "t1" in str(v) for s in spans.get_finished_spans() for v in s.attributes.values()
    )


def test_each_service_reports_its_own_name_unless_otel_service_name_says_otherwise(
    spans, monkeypatch
):
    with tracing.sending("notifier", "inapp"):
        pass
    monkeypatch.setenv("OTEL_SERVICE_NAME", "community-notifier")
    tracing.install(SimpleSpanProcessor(spans))  # providers are made anew
    with tracing.sending("notifier", "inapp"):
        pass
    names = [s.resource.attributes["service.name"] for s in named(spans, "send inapp")]
    assert names == ["sarafan-notifier", "community-notifier"]


def test_every_otel_variable_the_tracing_code_reads_is_listed_for_the_deploy_files():
    source = "".join(p.read_text() for p in Path(tracing.__file__).parent.glob("*.py"))
    read = set(re.findall(r'"(OTEL_[A-Z_]+)"', source))
    assert read and read <= set(tracing.VARIABLES)
