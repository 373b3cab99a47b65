"""The outbox's batch form against real servers: many new documents' events in one batch
document, published once whatever crashes where (shared/outbox_batch.py)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.events import MemberLeft, new_event, utcnow
from shared.metrics import Metrics
from shared.outbox import Relay
from shared.outbox_batch import BATCH_FIELD, BATCHES, batch_document, new_batch_id
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork
from tests.command_counts import WriteCounter
from tests.helpers import StoppedRelay, wait_until
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
async def parts(nats_test_url, mongo_url):
    name = f"t{uuid.uuid4().hex[:10]}_batch"
    counter = WriteCounter.start(name)  # before the client: it reports to the counter
    client = AsyncMongoClient(mongo_url)
    db = client[name]
    settings = ServiceSettings(NATS_URL=nats_test_url, MONGODB_URL=mongo_url)
    bus = Bus("members", settings, Metrics("members"), db)
    await bus.start()
    await wait_until(bus.ready)
    # A sweep far away: the tests sweep when they mean to.
    relay = Relay(bus, [], bus.metrics, sweep_seconds=3600)
    await relay.start()
    yield bus, relay, db, counter
    counter.on = False
    await relay.stop()
    await bus.stop()
    await client.drop_database(db.name)
    await client.close()


def left(member_id: str):
    return new_event(MemberLeft(member_id=member_id, left_at=utcnow()))


def members(n: int, prefix: str = "m"):
    docs = [{"_id": f"{prefix}{i:04d}", "name": f"Member {i}"} for i in range(n)]
    return docs, {d["_id"]: [left(d["_id"])] for d in docs}


async def stored(bus: Bus) -> list:
    return await stream_messages(bus.js, "MEMBERS", "members.>")


async def exactly_once(bus: Bus, ids: list[str]) -> None:
    """Each document's event is in the stream once, and nothing else is."""

    async def all_there():
        msgs = await stored(bus)
        return msgs if len(msgs) >= len(ids) else None

    msgs = await wait_until(all_there, timeout=20, message="not every event was published")
    announced = [json.loads(m.data)["data"]["member_id"] for m in msgs]
    assert sorted(announced) == sorted(ids), f"{len(msgs)} messages for {len(ids)} documents"


async def expire_leases(db) -> None:
    """What 30 seconds do to a batch nobody settled: the sweeper may take it."""
    await db[BATCHES].update_many({}, {"$set": {"lease_until_ms": 0}})


async def test_a_batch_is_published_once_and_removed_with_one_write_not_one_per_document(parts):
    bus, relay, db, counter = parts
    docs, events = members(300)
    counter.on = True
    async with UnitOfWork(relay) as uow:
        new = await uow.commit(uow.insert_many(db["members"], docs, events), wait=True)
    counter.on = False
    assert sorted(new) == sorted(events)
    await exactly_once(bus, list(events))
    assert await db[BATCHES].find_one({}) is None
    # Inserts of the documents and the batch, then one delete: nothing written per document.
    assert counter.written("insert", "members") == 300
    assert counter.changed() == 1 == counter.written("delete", BATCHES)
    doc = await db["members"].find_one({"_id": "m0000"})
    assert "outbox" not in doc and "outbox_pending" not in doc  # the events never rode in it


async def test_a_batch_whose_writer_died_before_publishing_is_published_once_after_its_lease(
    parts,
):
    bus, relay, db, _ = parts
    docs, events = members(120)
    with StoppedRelay(relay):  # the process "dies" between the insert and the publish
        async with UnitOfWork(relay) as uow:
            uow.insert_many(db["members"], docs, events)
    assert await stored(bus) == []
    # Within its lease the batch is its writer's (its insert may still be running): not swept.
    assert await relay.sweep() == 0
    await expire_leases(db)
    assert await relay.sweep() == 120
    await exactly_once(bus, list(events))
    assert await db[BATCHES].find_one({}) is None
    assert await relay.sweep() == 0


async def test_a_crash_in_the_middle_of_the_insert_publishes_each_written_document_once(parts):
    bus, relay, db, _ = parts
    docs, events = members(10)
    # The batch names all ten, but the process died after the sixth document was inserted.
    first = batch_document(new_batch_id(), "members", events)
    await db[BATCHES].insert_one(first)
    await db["members"].insert_many([{**d, BATCH_FIELD: first["_id"]} for d in docs[:6]])
    # The cause, not acknowledged, is handled again: new events (new ids) for all ten.
    again = {d: [left(d)] for d in events}
    async with UnitOfWork(relay) as uow:
        new = await uow.commit(uow.insert_many(db["members"], docs, again), wait=True)
    assert sorted(new) == [d["_id"] for d in docs[6:]]  # the first six were written before
    await expire_leases(db)
    assert await relay.sweep() == 6  # the first batch's six; its four others never happened
    await exactly_once(bus, list(events))
    ids = {json.loads(m.data)["id"] for m in await stored(bus)}
    assert ids == {events[d][0].id for d in list(events)[:6]} | {
        again[d][0].id for d in list(events)[6:]
    }
    assert await db[BATCHES].find_one({}) is None


async def test_a_batch_published_but_not_removed_before_a_crash_adds_nothing_to_the_stream(
    parts,
):
    bus, relay, db, _ = parts
    docs, events = members(50)
    with StoppedRelay(relay):
        async with UnitOfWork(relay) as uow:
            uow.insert_many(db["members"], docs, events)
    left_behind = await db[BATCHES].find_one({})
    await expire_leases(db)
    assert await relay.sweep() == 50
    # The delete was lost to a crash: the batch is there again, as the crash left it.
    await db[BATCHES].insert_one({**left_behind, "lease_until_ms": 0})
    assert await relay.sweep() == 50  # published again under the same event ids ...
    await exactly_once(bus, list(events))  # ... which JetStream drops as duplicates
    assert await db[BATCHES].find_one({}) is None


async def test_two_relays_sweeping_one_batch_publish_each_event_once(parts):
    bus, relay, db, _ = parts
    other = Relay(bus, [], bus.metrics, sweep_seconds=3600)
    await other.start()
    try:
        docs, events = members(200)
        with StoppedRelay(relay):
            async with UnitOfWork(relay) as uow:
                uow.insert_many(db["members"], docs, events)
        await expire_leases(db)
        await asyncio.gather(relay.sweep(), other.sweep())
        await exactly_once(bus, list(events))
        assert await db[BATCHES].find_one({}) is None
    finally:
        await other.stop()


async def test_documents_written_before_keep_their_batch_and_are_not_announced_again(parts):
    bus, relay, db, _ = parts
    docs, events = members(20)
    async with UnitOfWork(relay) as uow:
        uow.insert_many(db["members"], docs, events)
        await uow.commit(wait=True)
    before = {d["_id"]: d[BATCH_FIELD] async for d in db["members"].find({})}
    async with UnitOfWork(relay) as uow:  # the same documents, redelivered
        again = {d: [left(d)] for d in events}
        assert await uow.commit(uow.insert_many(db["members"], docs, again), wait=True) == []
    assert {d["_id"]: d[BATCH_FIELD] async for d in db["members"].find({})} == before
    await exactly_once(bus, list(events))
    assert await db[BATCHES].find_one({}) is None


async def test_a_batch_written_while_nats_is_away_is_published_when_it_is_back(parts, nats_server):
    bus, relay, db, _ = parts
    docs, events = members(40)
    nats_server.stop()
    await wait_until(lambda: not bus.connected, timeout=10)
    async with UnitOfWork(relay) as uow:
        uow.insert_many(db["members"], docs, events)
        await uow.commit(wait=True)  # no PubAck: the writer releases the batch to the sweeper
    batch = await db[BATCHES].find_one({})
    assert batch is not None and batch["lease_until_ms"] == 0
    nats_server.start()
    await wait_until(lambda: bus.connected, timeout=20)
    await relay.sweep()  # (the reconnection wakes the relay's own sweep too)
    await exactly_once(bus, list(events))
    assert await db[BATCHES].find_one({}) is None
