"""The consumer wrapper against a real nats-server: retries, dead letters, batches."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from pymongo import AsyncMongoClient

from shared.bus import Bus, Consumer, TransientError
from shared.events import MemberLeft, new_event, utcnow
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
async def make_bus(nats_test_url, mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_bus"]
    buses = []

    async def make(*consumers: Consumer) -> Bus:
        settings = ServiceSettings(
            NATS_URL=nats_test_url,
            MONGODB_URL=mongo_url,
            SARAFAN_MAX_DELIVER=3,
            SARAFAN_RETRY_BACKOFF_SECONDS=0.05,
        )
        bus = Bus("members", settings, Metrics("members"), db, consumers=list(consumers))
        await bus.start()
        buses.append(bus)
        await wait_until(bus.ready, message="bus never became ready")
        return bus

    yield make
    for bus in buses:
        await bus.stop()
    await client.drop_database(db.name)
    await client.close()


def left(i: int):
    return new_event(MemberLeft(member_id=f"m{i}", left_at=utcnow()))


async def test_transient_failure_is_retried_with_backoff_then_succeeds(make_bus):
    calls: Counter[str] = Counter()

    async def flaky(event, data):
        calls[event.id] += 1
        if calls[event.id] < 3:
            raise TransientError("database away")

    bus = await make_bus(Consumer("t-flaky", "MEMBERS", ["members.>"], flaky))
    event = left(1)
    await bus.publish(event)
    await wait_until(lambda: calls[event.id] == 3)
    metrics = bus.metrics.render().decode()
    await wait_until(lambda: 'outcome="ok"' in bus.metrics.render().decode())
    assert 'outcome="retry",service="members",type="member-left"} 2.0' in metrics


async def test_still_failing_after_max_deliver_goes_to_dlq_and_is_acked(make_bus):
    calls: Counter[str] = Counter()

    async def broken(event, data):
        calls[event.id] += 1
        raise TransientError("peer down for good")

    bus = await make_bus(Consumer("t-broken", "MEMBERS", ["members.>"], broken))
    await bus.publish(left(2))
    dead = await wait_until(lambda: stream_messages(bus.js, "DLQ", "dlq.>"))
    assert dead[0].headers["Sarafan-Dlq-Deliveries"] == "3"
    assert "peer down for good" in dead[0].headers["Sarafan-Dlq-Error"]
    info = await bus.js.consumer_info("MEMBERS", "t-broken")
    assert info.num_ack_pending == 0
    assert sum(calls.values()) == 3


async def test_a_bug_goes_to_dlq_at_once_and_the_next_message_is_handled(make_bus):
    handled: list[str] = []

    async def picky(event, data):
        if data.member_id == "m3":
            raise KeyError("a bug, not an outage")
        handled.append(data.member_id)

    bus = await make_bus(Consumer("t-picky", "MEMBERS", ["members.>"], picky))
    await bus.publish(left(3))
    await bus.publish(left(4))
    await wait_until(lambda: handled == ["m4"])
    dead = await wait_until(lambda: stream_messages(bus.js, "DLQ", "dlq.>"))
    assert dead[0].headers["Sarafan-Dlq-Deliveries"] == "1"
    assert "KeyError" in dead[0].headers["Sarafan-Dlq-Error"]


async def test_a_failing_batch_falls_back_to_one_by_one(make_bus):
    batches: list[int] = []
    single: list[str] = []

    async def one(event, data):
        if data.member_id == "m7":
            raise ValueError("poison")
        single.append(data.member_id)

    async def many(items):
        batches.append(len(items))
        if any(d.member_id == "m7" for _, d in items):
            raise ValueError("one bad apple")

    bus = await make_bus()
    for i in range(5, 10):
        await bus.publish(left(i))
    # Bind after publishing, so the first fetch sees the whole batch.
    bus.consumers.append(Consumer("t-batch", "MEMBERS", ["members.>"], one, handle_batch=many))
    await bus.stop()
    bus2 = await make_bus(*bus.consumers)
    await wait_until(lambda: sorted(single) == ["m5", "m6", "m8", "m9"])
    assert batches and batches[0] >= 2
    dead = await wait_until(lambda: stream_messages(bus2.js, "DLQ", "dlq.>"))
    assert [m.headers["Sarafan-Dlq-Subject"] for m in dead] == ["members.member-left.m7"]


async def test_batch_handler_gets_each_event_once_across_redelivery(make_bus):
    seen: Counter[str] = Counter()

    async def one(event, data):
        seen[event.id] += 1

    async def many(items):
        for event, _ in items:
            seen[event.id] += 1

    bus = await make_bus()
    events = [left(i) for i in range(20, 40)]
    for e in events:
        await bus.publish(e)
        await bus.publish(e)  # the same id again: JetStream drops it
    bus.consumers.append(Consumer("t-many", "MEMBERS", ["members.>"], one, handle_batch=many))
    await bus.stop()
    await make_bus(*bus.consumers)
    await wait_until(lambda: len(seen) == 20)
    assert set(seen.values()) == {1}


async def test_a_deeply_nested_poison_is_dead_lettered_alone_and_its_batch_is_handled(make_bus):
    """`[[[[…` raised RecursionError out of the decoder: nothing of its fetched batch was
    settled, and after max deliveries JetStream gave up on the poison and on every good event
    that shared its batch. Now the poison alone goes to the DLQ; its batch is handled."""
    handled: list[str] = []

    async def one(event, data):
        handled.append(data.member_id)

    async def many(items):
        handled.extend(d.member_id for _, d in items)

    bus = await make_bus()
    for i in range(50, 55):
        await bus.publish(left(i))
    await bus.js.publish("members.member-left.m_poison", b"[" * 100_000, stream="MEMBERS")
    for i in range(55, 60):
        await bus.publish(left(i))
    # Bind after publishing, so the first fetch holds the poison among the good ones.
    bus.consumers.append(Consumer("t-deep", "MEMBERS", ["members.>"], one, handle_batch=many))
    await bus.stop()
    bus2 = await make_bus(*bus.consumers)
    await wait_until(lambda: sorted(handled) == [f"m{i}" for i in range(50, 60)])
    dead = await wait_until(lambda: stream_messages(bus2.js, "DLQ", "dlq.>"))
    assert [m.subject for m in dead] == ["dlq.members.t-deep.members.member-left.m_poison"]
    assert "nests deeper" in dead[0].headers["Sarafan-Dlq-Error"]
    assert dead[0].headers["Sarafan-Dlq-Deliveries"] == "1"

    async def settled() -> bool:
        info = await bus2.js.consumer_info("MEMBERS", "t-deep")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_until(settled, message="messages of the batch left unacknowledged")
