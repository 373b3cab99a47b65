"""Erasing a member's messages on a real nats-server: their bytes leave the store (not only the
index), the other messages stay, and the lookups follow the member's messages, not the stream."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from tests.helpers import wait_until

NEEDLE = b"vera.erasable@example.org"


@pytest.fixture
async def bus(nats_test_url, mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_erase"]
    settings = ServiceSettings(NATS_URL=nats_test_url, MONGODB_URL=mongo_url)
    running = Bus("members", settings, Metrics("members"), db)
    await running.start()
    await wait_until(running.ready, message="bus never became ready")
    try:
        yield running
    finally:
        await running.stop()
        await client.drop_database(db.name)
        await client.close()


def store_bytes(nats_server) -> bytes:
    """Every byte of the server's JetStream store (message blocks, indexes, consumers)."""
    store = Path(nats_server.child.argv[-1]).parent / "nats"
    return b"".join(p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file())


async def publish_members(js, others: int) -> None:
    """`others` messages of other members, with Vera's five among them (two subjects)."""
    for i in range(others):
        await js.publish(f"members.member-joined.m{i}", b'{"filler": true}', stream="MEMBERS")
        if i % (others // 4) == 1:
            await js.publish("members.member-updated.vera", b'{"email": "%s"}' % NEEDLE)
    await js.publish("members.member-joined.vera", b'{"email": "%s"}' % NEEDLE, stream="MEMBERS")


async def test_erasing_a_members_subjects_overwrites_their_bytes_and_keeps_the_rest(
    bus, nats_server, nc
):
    js = nc.jetstream()
    await publish_members(js, 200)
    assert store_bytes(nats_server).count(NEEDLE) == 5
    assert await bus.erase("MEMBERS", "members.*.vera") == 5
    info = await js.stream_info("MEMBERS", subjects_filter="members.*.vera")
    assert not info.state.subjects
    assert info.state.messages == 200
    assert NEEDLE not in store_bytes(nats_server)
    assert await bus.erase("MEMBERS", "members.*.vera") == 0  # a repeat finds nothing
    assert await bus.erase("NO_SUCH_STREAM", "members.*.vera") == 0


async def test_a_purge_by_subject_alone_leaves_the_bytes_in_the_message_block(nats_server, nc):
    # Why erasure deletes message by message: what it did before (and what a purge still does).
    js = nc.jetstream()
    await js.add_stream(name="MEMBERS", subjects=["members.>"])
    await publish_members(js, 200)
    await js.purge_stream("MEMBERS", subject="members.*.vera")
    info = await js.stream_info("MEMBERS", subjects_filter="members.*.vera")
    assert not info.state.subjects  # gone from the index...
    assert NEEDLE in store_bytes(nats_server)  # ...not from the disk


async def test_erasure_asks_only_for_the_members_messages_however_long_the_stream(bus, nc):
    js = nc.jetstream()
    await publish_members(js, 2000)
    calls: Counter[str] = Counter()

    async def count(msg) -> None:
        calls[msg.subject.rsplit(".", 2)[-2]] += 1  # GET or DELETE

    api = await nc.subscribe("$JS.API.STREAM.MSG.*.MEMBERS", cb=count)
    await nc.flush()  # the server has the subscription before the first request is made
    try:
        assert await bus.erase("MEMBERS", "members.*.vera") == 5
        await nc.flush()
        # One lookup per message, and one per subject to learn it has no more: not 2005.
        await wait_until(lambda: calls == Counter(GET=5 + 2, DELETE=5), message=str(calls))
    finally:
        await api.unsubscribe()
