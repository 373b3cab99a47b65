"""The outbox relay against real servers: right after the write, many at once, never twice."""

from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.events import MemberLeft, new_event, utcnow
from shared.metrics import Metrics
from shared.outbox import Relay
from shared.outbox_layout import update_with_outbox, with_outbox
from shared.outbox_port import Committed, Written
from shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
async def relay(nats_test_url, mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_relay"]
    settings = ServiceSettings(NATS_URL=nats_test_url, MONGODB_URL=mongo_url)
    bus = Bus("members", settings, Metrics("members"), db)
    await bus.start()
    await wait_until(bus.ready)
    # A sweep far away: whatever is published below went out because of the write itself.
    relay = Relay(bus, [db["members"]], bus.metrics, sweep_seconds=3600)
    await relay.start()
    yield relay, db["members"]
    await relay.stop()
    await bus.stop()
    await client.drop_database(db.name)
    await client.close()


def left(member_id: str):
    return new_event(MemberLeft(member_id=member_id, left_at=utcnow()))


async def test_successive_writes_to_one_document_are_all_published_without_a_sweep(relay):
    relay, members = relay
    first, second, third = left("m1"), left("m1"), left("m1")
    await members.insert_one(with_outbox({"_id": "m1"}, [first]))
    await relay.committed(Committed([Written(members, {"m1": [first]})]))
    for event in (second, third):  # while the first flush may still be running
        await members.update_one({"_id": "m1"}, update_with_outbox({}, [event]))
        await relay.committed(Committed([Written(members, {"m1": None})]))
    published = await wait_until(
        lambda: _at_least(relay.bus.js, "members.member-left.m1", 3), timeout=10
    )
    assert [m.headers["Nats-Msg-Id"] for m in published] == [first.id, second.id, third.id]
    doc = await members.find_one({"_id": "m1"})
    assert doc["outbox_pending"] == 0 and not doc["outbox"]


async def test_flush_many_publishes_each_pending_event_once_with_one_bulk_mark(relay):
    relay, members = relay
    events = {f"m{i}": left(f"m{i}") for i in range(50)}
    await members.insert_many([with_outbox({"_id": k}, [e]) for k, e in events.items()])
    assert await relay.flush_many(members, list(events)) == 50
    assert await relay.flush_many(members, list(events)) == 0  # nothing left to send
    assert await members.count_documents({"outbox_pending": {"$gt": 0}}) == 0
    assert len(await stream_messages(relay.bus.js, "MEMBERS", "members.>")) == 50


async def _at_least(js, subject: str, n: int):
    msgs = await stream_messages(js, "MEMBERS", subject)
    return msgs if len(msgs) >= n else None
