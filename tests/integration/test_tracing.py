"""Tracing across the event flow against real servers: one trace from a join to its welcome."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.events import MemberJoined, new_event
from tests.helpers import StoppedRelay, wait_until
from tests.integration.conftest import join_body
from tests.integration.notifier_peers import MailRecorder, create_streams, smtp_server
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every service built in the test exports its spans here (and tracing is off after)."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.install(None)


@pytest.fixture
def smtp() -> Iterator[MailRecorder]:
    with smtp_server() as recorder:
        yield recorder


def _one(exporter: InMemorySpanExporter, **wanted: Any) -> ReadableSpan | None:
    """The finished span with these properties (name, kind, service, attributes), if any."""
    for span in exporter.get_finished_spans():
        attributes = dict(span.attributes or {})
        if span.name != wanted.get("name", span.name) or span.kind != wanted.get("kind", span.kind):
            continue
        if span.resource.attributes["service.name"] != wanted.get("service", "-"):
            continue
        if all(attributes.get(k) == v for k, v in wanted.get("attributes", {}).items()):
            return span
    return None


def _parent_is(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None, f"{child.name} has no parent"
    assert child.context.trace_id == parent.context.trace_id
    return child.parent.span_id == parent.context.span_id


def _traceparent(span: ReadableSpan) -> str:
    """The W3C traceparent naming `span`."""
    c = span.context
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


async def test_a_join_and_its_welcome_are_one_trace_from_the_request_to_each_channel_send(
    spans, services, nc, smtp
):
    js = nc.jetstream()
    fast = {"SMTP_URL": smtp.url, "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1}  # type: ignore[attr-defined]
    async with services("members", "notifier", **fast) as s:
        r = await s["members"].http.post("/v1/members", json=join_body(email="olga@example.org"))
        assert r.status_code == 201, r.text
        mid = r.json()["member_id"]

        async def welcomed() -> list[Any]:
            return (await s["notifier"].http.get(f"/v1/members/{mid}/inbox")).json()["items"]

        assert [i["template"] for i in await wait_until(welcomed)] == ["welcome"]
        await wait_until(lambda: smtp.to("olga@example.org"), message="no welcome email")

        request = _one(
            spans, name="POST /v1/members", kind=SpanKind.SERVER, service="sarafan-members"
        )
        assert request is not None
        joined = await wait_until(lambda: stream_messages(js, "MEMBERS", f"members.*.{mid}"))
        event = json.loads(joined[0].data)
        publish = await wait_until(
            lambda: _one(spans, kind=SpanKind.PRODUCER, service="sarafan-members",
                         attributes={"messaging.message.id": event["id"]}),
        )  # fmt: skip
        process = await wait_until(
            lambda: _one(spans, kind=SpanKind.CONSUMER, service="sarafan-notifier",
                         attributes={"messaging.message.id": event["id"]}),
        )  # fmt: skip
        inapp = await wait_until(
            lambda: _one(spans, name="send inapp", kind=SpanKind.CLIENT, service="sarafan-notifier")
        )
        mail = await wait_until(
            lambda: _one(spans, name="send email", kind=SpanKind.CLIENT, service="sarafan-notifier")
        )

    # The event was created in the request: its envelope names the request's span ...
    assert event["traceparent"] == _traceparent(request)
    # ... the outbox publish is its child, and the message's header names the publish (the hop).
    assert _parent_is(publish, request)
    hop = joined[0].headers["traceparent"]
    assert hop == _traceparent(publish)
    assert _parent_is(process, publish)
    # The welcome's in-app store and its email, each a send of the consumer span's trace.
    assert _parent_is(inapp, process) and _parent_is(mail, process)
    assert len({s.context.trace_id for s in (request, publish, process, inapp, mail)}) == 1
    assert publish.attributes["messaging.system"] == "nats"
    assert publish.attributes["messaging.destination.name"] == f"members.member-joined.{mid}"
    assert publish.attributes["messaging.operation.type"] == "send"
    assert publish.name == "publish members.member-joined.*"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.consumer.group.name"] == "notifier-members"
    assert process.attributes["sarafan.outcome"] == "ok"
    assert request.attributes["http.route"] == "/v1/members"
    assert request.attributes["http.response.status_code"] == 201
    assert mail.attributes["sarafan.outcome"] == "sent"
    # No contact address in any span.
    assert "olga@example.org" not in repr(
        [dict(s.attributes or {}) for s in spans.get_finished_spans()]
    )


async def test_an_event_without_traceparent_from_an_outside_producer_starts_a_new_trace(
    spans, services, nc
):
    js = nc.jetstream()
    async with services("members", "notifier"):
        outside = new_event(
            MemberJoined.model_validate({**MemberJoined.example, "member_id": "m_out"})
        )
        body = outside.model_dump(mode="json")
        assert "traceparent" not in body  # made outside any span (tracing on)
        await js.publish(
            outside.nats_subject, json.dumps(body).encode(), stream="MEMBERS",
            headers={"Nats-Msg-Id": outside.id},
        )  # fmt: skip
        process = await wait_until(
            lambda: _one(spans, kind=SpanKind.CONSUMER, service="sarafan-notifier",
                         attributes={"messaging.message.id": outside.id}),
        )  # fmt: skip
        inapp = await wait_until(
            lambda: _one(spans, name="send inapp", kind=SpanKind.CLIENT, service="sarafan-notifier")
        )
    assert process.parent is None  # a root: the trace starts at the consumer
    assert process.status.status_code != StatusCode.ERROR
    assert _parent_is(inapp, process)


async def test_the_traceparent_survives_a_crash_and_the_sweep_publishes_in_the_request_trace(
    spans, services, nc
):
    js = nc.jetstream()
    async with services("members") as s:
        StoppedRelay(s["members"].runtime.relay)  # the process "dies" between write and publish
        r = await s["members"].http.post("/v1/members", json=join_body())
        assert r.status_code == 201, r.text
        mid = r.json()["member_id"]
        doc = await s["members"].store.members.find_one({"_id": mid})
        (stored,) = doc["outbox"].values()
    request = _one(spans, name="POST /v1/members", kind=SpanKind.SERVER, service="sarafan-members")
    assert request is not None
    # The outbox document keeps the trace context with the event.
    assert stored["traceparent"] == _traceparent(request)
    assert _one(spans, kind=SpanKind.PRODUCER, service="sarafan-members") is None

    # A new process over the same database: its sweeper publishes the event, in the same trace.
    async with services("members"):
        joined = await wait_until(lambda: stream_messages(js, "MEMBERS", f"members.*.{mid}"))
        publish = await wait_until(
            lambda: _one(spans, kind=SpanKind.PRODUCER, service="sarafan-members",
                         attributes={"messaging.message.id": stored["id"]}),
        )  # fmt: skip
    assert json.loads(joined[0].data)["traceparent"] == stored["traceparent"]
    assert _parent_is(publish, request)
    assert joined[0].headers["traceparent"] == _traceparent(publish)


async def test_joins_consumed_in_one_batch_keep_each_welcome_in_the_trace_of_its_own_join(
    spans, services, nc
):
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    js = nc.jetstream()
    requests = {
        "m_first": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "m_second": "00-1bf7651916cd43dd8448eb211c80319d-c7ad6b7169203332-01",
    }
    for member_id, traceparent in requests.items():
        data = MemberJoined.model_validate({**MemberJoined.example, "member_id": member_id})
        event = new_event(data).model_copy(update={"traceparent": traceparent})
        await js.publish(
            event.nats_subject, event.to_json(), stream="MEMBERS", headers={"Nats-Msg-Id": event.id}
        )
    # Both wait in the stream: the notifier's first pull fetches them together.
    async with services("notifier"):

        def settled() -> list[ReadableSpan] | None:
            done = spans.get_finished_spans()
            sends = [s for s in done if s.name == "send inapp"]
            sent = [s for s in done if s.name == "publish notifier.notification-sent.*"]
            return done if len(sends) == 2 and len(sent) == 2 else None

        done = await wait_until(settled, message="the two welcomes were not all traced")
    consumed = [s for s in done if s.kind == SpanKind.CONSUMER]
    assert len(consumed) == 2
    for span in consumed:
        assert span.attributes["messaging.batch.message_count"] == 2  # the batch path
        # Each is in the trace of its own join, child of the context its event carries.
        member_id = span.attributes["messaging.destination.name"].rsplit(".", 1)[1]
        _, trace_id, parent_id, _ = requests[member_id].split("-")
        assert f"{span.context.trace_id:032x}" == trace_id
        assert f"{span.parent.span_id:016x}" == parent_id
        # Its in-app send and the notification-sent it announces are in that trace too.
        children = [s for s in done if s.parent and s.parent.span_id == span.context.span_id]
        assert sorted(s.name for s in children) == [
            "publish notifier.notification-sent.*",
            "send inapp",
        ]
        assert {s.context.trace_id for s in children} == {span.context.trace_id}
