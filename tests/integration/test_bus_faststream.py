"""The bus against a real nats-server: what moving it (onto FastStream, then off it onto
nats-py's own pull loop) must not lose."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from pymongo import AsyncMongoClient

from shared.bus import Bus, Consumer
from shared.events import MemberLeft, new_event, utcnow
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
async def make_bus(nats_test_url, mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_bus"]
    buses: list[Bus] = []

    async def make(*consumers: Consumer, ready: bool = True) -> Bus:
        settings = ServiceSettings(
            NATS_URL=nats_test_url,
            MONGODB_URL=mongo_url,
            SARAFAN_MAX_DELIVER=3,
            SARAFAN_RETRY_BACKOFF_SECONDS=0.05,
            SARAFAN_NATS_PING_SECONDS=1,
        )
        bus = Bus("members", settings, Metrics("members"), db, consumers=list(consumers))
        await bus.start()
        buses.append(bus)
        if ready:
            await wait_until(bus.ready, message="bus never became ready")
        return bus

    yield make
    for bus in buses:
        await bus.stop()
    await client.drop_database(db.name)
    await client.close()


def left(i: int):
    return new_event(MemberLeft(member_id=f"m{i}", left_at=utcnow()))


async def ignore(event, data) -> None:
    return None


async def test_an_invalid_message_in_a_batch_is_dead_lettered_alone_and_the_rest_are_handled(
    make_bus,
):
    batches: list[list[str]] = []

    async def many(items):
        batches.append([d.member_id for _, d in items])

    publisher = await make_bus()
    for i in range(3):
        await publisher.publish(left(i))
    await publisher.js.publish(
        "members.member-left.bad", b"{not json", stream="MEMBERS", headers={"Nats-Msg-Id": "bad"}
    )
    await publisher.publish(left(3))
    # Bound after publishing, so the first pull brings all five in one batch.
    await make_bus(Consumer("t-mixed", "MEMBERS", ["members.>"], ignore, handle_batch=many))
    dead = await wait_until(lambda: stream_messages(publisher.js, "DLQ", "dlq.>"))
    await wait_until(lambda: sum(len(b) for b in batches) == 4)
    assert batches == [["m0", "m1", "m2", "m3"]]
    assert [m.headers["Sarafan-Dlq-Subject"] for m in dead] == ["members.member-left.bad"]
    info = await publisher.js.consumer_info("MEMBERS", "t-mixed")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_backlog_is_read_in_full_batches(make_bus):
    sizes: list[int] = []

    async def many(items):
        sizes.append(len(items))

    publisher = await make_bus()
    await asyncio.gather(*(publisher.publish(left(i)) for i in range(250)))
    await make_bus(
        Consumer("t-backlog", "MEMBERS", ["members.>"], ignore, handle_batch=many, batch_size=100)
    )
    await wait_until(lambda: sum(sizes) == 250)
    assert sizes == [100, 100, 50]


async def test_a_handler_slower_than_ack_wait_is_not_redelivered(make_bus):
    calls: Counter[str] = Counter()

    async def slow(event, data):
        calls[event.id] += 1
        await asyncio.sleep(2.5)  # ack_wait is 1 s: only the in-progress acks keep it ours

    bus = await make_bus(Consumer("t-slow", "MEMBERS", ["members.>"], slow, ack_wait=1))
    event = left(1)
    await bus.publish(event)
    await wait_until(lambda: 'outcome="ok"' in bus.metrics.render().decode(), timeout=15)
    info = await bus.js.consumer_info("MEMBERS", "t-slow")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
    assert calls[event.id] == 1


async def test_a_changed_setting_reaches_an_existing_durable_when_the_bus_starts(make_bus):
    publisher = await make_bus()
    await publisher.js.add_consumer(
        "MEMBERS",
        ConsumerConfig(
            durable_name="t-old", ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=10
        ),
    )
    await make_bus(Consumer("t-old", "MEMBERS", ["members.member-left.>"], ignore, ack_wait=7))
    config = (await publisher.js.consumer_info("MEMBERS", "t-old")).config
    assert config.ack_wait == 7
    assert config.filter_subject == "members.member-left.>"
    assert config.max_ack_pending == 1000
    assert config.max_deliver == 3 + 2


async def test_a_published_event_is_stored_once_as_a_structured_cloudevent(make_bus):
    bus = await make_bus()
    event = left(5)
    await bus.publish(event)
    await bus.publish(event)  # a retry of the same event: JetStream drops it
    stored = await stream_messages(bus.js, "MEMBERS", "members.>")
    assert len(stored) == 1
    assert stored[0].subject == "members.member-left.m5"
    assert stored[0].headers["Nats-Msg-Id"] == event.id
    # The CloudEvents NATS binding's structured mode: the content type says the body is the
    # whole event (matched case-insensitively, so once), and no attribute rides in a ce- header.
    content_types = [v for k, v in stored[0].headers.items() if k.lower() == "content-type"]
    assert content_types == ["application/cloudevents+json"]
    assert not [k for k in stored[0].headers if k.lower().startswith("ce-")]
    assert stored[0].data == event.to_json()


async def test_a_message_without_a_content_type_is_still_read_as_a_structured_event(make_bus):
    handled: list[str] = []

    async def one(event, data):
        handled.append(data.member_id)

    bus = await make_bus(Consumer("t-liberal", "MEMBERS", ["members.>"], one))
    event = left(6)
    # As an older producer (or a hand-written one) publishes it: the id header alone.
    await bus.js.publish(
        event.nats_subject, event.to_json(), stream="MEMBERS", headers={"Nats-Msg-Id": event.id}
    )
    await wait_until(lambda: handled == ["m6"], timeout=15)


async def test_hooks_run_again_and_consuming_goes_on_after_nats_comes_back(make_bus, nats_server):
    connects: list[str] = []
    handled: list[str] = []

    async def one(event, data):
        handled.append(data.member_id)

    async def hook() -> None:
        connects.append("connected")

    bus = await make_bus(Consumer("t-back", "MEMBERS", ["members.>"], one), ready=False)
    bus.on_connected.append(hook)
    await wait_until(bus.ready)
    await wait_until(lambda: connects)
    nats_server.stop()
    await wait_until(lambda: not bus.connected, message="the disconnection went unnoticed")
    nats_server.start()
    await wait_until(lambda: len(connects) >= 2, timeout=20, message="no hook on reconnect")
    await wait_until(lambda: bus.connected)
    await bus.publish(left(8))
    await wait_until(lambda: handled == ["m8"], timeout=15)
