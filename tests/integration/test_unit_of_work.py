"""The unit of work against real servers: nothing is written before commit, each write lands
with its events at commit, the commit publishes them, an exception drops what was staged, and a
restarted relay finds what a crash left without being told where to look."""

from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.bus import Bus
from shared.events import MemberLeft, new_event, utcnow
from shared.metrics import Metrics
from shared.outbox import Relay
from shared.outbox_layout import without_outbox
from shared.outbox_port import Committed
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork, Write
from tests.helpers import StoppedRelay, wait_until
from tests.integration.test_delivery_guarantees import stream_messages


@pytest.fixture
async def parts(nats_test_url, mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_uow"]
    settings = ServiceSettings(NATS_URL=nats_test_url, MONGODB_URL=mongo_url)
    bus = Bus("members", settings, Metrics("members"), db)
    await bus.start()
    await wait_until(bus.ready)
    # No collection named: the unit of work registers what it writes to. A sweep far away:
    # whatever is published went out because of the commit.
    relay = Relay(bus, [], bus.metrics, sweep_seconds=3600)
    await relay.start()
    yield bus, relay, db
    await relay.stop()
    await bus.stop()
    await client.drop_database(db.name)
    await client.close()


def left(member_id: str):
    return new_event(MemberLeft(member_id=member_id, left_at=utcnow()))


async def published(bus: Bus, subject: str, n: int):
    async def enough():
        msgs = await stream_messages(bus.js, "MEMBERS", subject)
        return msgs if len(msgs) >= n else None

    return await wait_until(enough, timeout=10)


async def test_commit_publishes_each_write_s_events_and_empties_the_outbox(parts):
    bus, relay, db = parts
    members = db["members"]
    first, second = left("u1"), left("u1")
    async with UnitOfWork(relay) as uow:
        uow.insert(members, {"_id": "u1", "name": "Vera"}, [first])
        changed = uow.update(members, {"_id": "u1"}, {"$set": {"name": "V"}}, [second])
        # Nothing is written, nor published, before the commit.
        assert await members.find_one({"_id": "u1"}) is None
        assert await stream_messages(bus.js, "MEMBERS", "members.>") == []
    assert changed.result.modified_count == 1
    msgs = await published(bus, "members.member-left.u1", 2)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [first.id, second.id]
    await wait_until(lambda: _pending(members, "u1", 0))
    shown = await members.find_one({"_id": "u1"}, without_outbox())
    assert shown == {"_id": "u1", "name": "V"}


async def test_an_update_that_matches_nothing_publishes_nothing(parts):
    _bus, relay, db = parts
    uow = UnitOfWork(relay)
    result = await uow.commit(
        uow.update(db["members"], {"_id": "nobody"}, {"$set": {"x": 1}}, [left("n")])
    )
    assert result.matched_count == 0
    assert relay.collections == {}  # nothing written, nothing to watch


async def test_a_bulk_of_many_documents_is_published_by_one_flush(parts):
    bus, relay, db = parts
    members = db["members"]
    events = {f"b{i}": left(f"b{i}") for i in range(30)}
    async with UnitOfWork(relay) as uow:
        uow.bulk(members, [Write.insert({"_id": k}, [e]) for k, e in events.items()])
    msgs = await published(bus, "members.member-left.*", 30)
    assert sorted(m.headers["Nats-Msg-Id"] for m in msgs) == sorted(e.id for e in events.values())


async def test_a_bulk_failing_in_part_publishes_the_events_of_the_writes_that_landed(parts):
    bus, relay, db = parts
    members = db["members"]
    await members.insert_one({"_id": "dup"})
    ok, refused = left("fresh"), left("dup")
    uow = UnitOfWork(relay)
    uow.bulk(
        members, [Write.insert({"_id": "fresh"}, [ok]), Write.insert({"_id": "dup"}, [refused])]
    )
    with pytest.raises(BulkWriteError):
        await uow.commit()
    msgs = await published(bus, "members.member-left.fresh", 1)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [ok.id]
    assert await stream_messages(bus.js, "MEMBERS", "members.member-left.dup") == []


async def test_a_new_relay_finds_a_collection_left_with_pending_events(parts):
    bus, relay, db = parts
    members = db["members"]
    lost = left("c1")
    StoppedRelay(relay)  # a crash between the write and the publish
    async with UnitOfWork(relay) as uow:
        uow.insert(members, {"_id": "c1"}, [lost])
    await wait_until(lambda: _has_sweep_index(members))
    restarted = Relay(bus, [], bus.metrics, sweep_seconds=3600)
    await restarted.start()
    try:
        assert "members" in restarted.collections
        assert await restarted.sweep() == 1
    finally:
        await restarted.stop()
    msgs = await published(bus, "members.member-left.c1", 1)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [lost.id]


async def test_a_commit_hands_the_relay_everything_it_wrote_in_one_call(parts):
    bus, relay, db = parts
    handed: list[Committed] = []
    original = relay.committed

    async def spy(commit: Committed) -> None:
        handed.append(commit)
        await original(commit)

    relay.committed = spy
    one, two, three = left("s1"), left("s2"), left("s3")
    async with UnitOfWork(relay) as uow:
        uow.insert(db["members"], {"_id": "s1"}, [one])
        uow.update(db["members"], {"_id": "s1"}, {"$set": {"n": 1}})  # no events
        uow.insert(db["others"], {"_id": "s2"}, [two])
        uow.insert_many(db["deliveries"], [{"_id": "s3"}], {"s3": [three]})
    [commit] = handed
    assert [(w.collection.name, w.documents) for w in commit.written] == [
        ("members", {"s1": [one]}),
        ("others", {"s2": [two]}),
    ]
    assert [(b.collection.name, b.documents) for b in commit.batches] == [
        ("deliveries", {"s3": [three]})
    ]
    assert commit.wait is False
    msgs = await published(bus, "members.member-left.*", 3)
    assert sorted(m.headers["Nats-Msg-Id"] for m in msgs) == sorted([one.id, two.id, three.id])
    await UnitOfWork(relay).commit()  # nothing written: the relay is not called
    assert len(handed) == 1


async def test_an_exception_before_commit_writes_and_publishes_nothing(parts):
    bus, relay, db = parts
    members = db["members"]
    await members.insert_one({"_id": "k1", "name": "Kept"})
    with pytest.raises(RuntimeError, match="the use case failed"):
        async with UnitOfWork(relay) as uow:
            uow.insert(members, {"_id": "k2"}, [left("k2")])
            uow.update(members, {"_id": "k1"}, {"$set": {"name": "Changed"}}, [left("k1")])
            uow.delete(members, {"_id": "k1"})
            raise RuntimeError("the use case failed")
    assert await members.find_one({"_id": "k2"}) is None
    assert await members.find_one({"_id": "k1"}) == {"_id": "k1", "name": "Kept"}
    assert relay.collections == {}  # nothing written with events: nothing to watch
    await uow.commit()  # what was dropped stays dropped
    assert await members.find_one({"_id": "k2"}) is None
    assert await stream_messages(bus.js, "MEMBERS", "members.>") == []


async def test_a_deciding_write_is_committed_on_its_own_and_what_follows_waits(parts):
    bus, relay, db = parts
    seats = db["seats"]
    await seats.insert_one({"_id": "a1", "free": 1})
    claimed = left("claim")
    async with UnitOfWork(relay) as uow:
        won = await uow.commit(
            uow.update(seats, {"_id": "a1", "free": {"$gt": 0}}, {"$inc": {"free": -1}}, [claimed])
        )
        assert won.modified_count == 1
        assert (await seats.find_one({"_id": "a1"}, without_outbox()))["free"] == 0
        lost = await uow.commit(
            uow.update(seats, {"_id": "a1", "free": {"$gt": 0}}, {"$inc": {"free": -1}})
        )
        assert lost.matched_count == 0
        follower = uow.insert(db["signups"], {"_id": "s1"}, [left("s1")])
        assert not follower.done
    assert follower.done
    msgs = await published(bus, "members.member-left.*", 2)
    assert [m.headers["Nats-Msg-Id"] for m in msgs][:1] == [claimed.id]


async def test_a_write_that_fails_at_commit_stops_it_and_drops_what_was_staged_after(parts):
    bus, relay, db = parts
    members = db["members"]
    await members.insert_one({"_id": "dup"})
    before, after = left("before"), left("after")
    uow = UnitOfWork(relay)
    first = uow.insert(members, {"_id": "before"}, [before])
    uow.insert(members, {"_id": "dup"}, [left("dup")])
    uow.insert(members, {"_id": "after"}, [after])
    with pytest.raises(DuplicateKeyError):
        await uow.commit()
    assert first.done
    assert await members.find_one({"_id": "after"}) is None
    msgs = await published(bus, "members.member-left.*", 1)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [before.id]
    await uow.commit()  # the dropped write is not made by a later commit either
    assert await members.find_one({"_id": "after"}) is None


async def test_a_bulk_may_skip_duplicates_and_say_which_were_refused(parts):
    _bus, relay, db = parts
    tags = db["tags"]
    await tags.insert_one({"_id": "t1"})
    async with UnitOfWork(relay) as uow:
        step = uow.bulk(
            tags,
            [Write.insert({"_id": "t0"}), Write.insert({"_id": "t1"}), Write.insert({"_id": "t2"})],
            skip_duplicates=True,
        )
        removed = uow.delete(tags, {"_id": "t0"})
    assert step.refused == [1]
    assert step.result is None
    assert removed.result.deleted_count == 1
    assert sorted(d["_id"] for d in await tags.find({}).to_list()) == ["t1", "t2"]


async def test_an_outcome_is_not_readable_before_the_commit_that_makes_it(parts):
    _bus, relay, db = parts
    uow = UnitOfWork(relay)
    step = uow.insert(db["members"], {"_id": "early"})
    with pytest.raises(RuntimeError, match="before the commit"):
        _ = step.result
    uow.discard()
    await uow.commit()
    assert await db["members"].find_one({"_id": "early"}) is None


async def _pending(coll, doc_id, n) -> bool:
    doc = await coll.find_one({"_id": doc_id})
    return doc is not None and doc.get("outbox_pending") == n


async def _has_sweep_index(coll) -> bool:
    return any(
        spec.get("key") == [("outbox_pending", 1)]
        for spec in (await coll.index_information()).values()
    )


async def test_find_one_and_update_takes_an_inclusion_projection_and_never_returns_the_outbox(
    parts,
):
    _bus, relay, db = parts
    seats = db["seats"]
    await seats.insert_one({"_id": "a2", "free": 2, "roster": {"x": 1}})
    async with UnitOfWork(relay) as uow:
        doc = await uow.commit(
            uow.find_one_and_update(
                seats, {"_id": "a2"}, {"$inc": {"free": -1}}, [left("a2")], projection={"free": 1}
            )
        )
    assert doc == {"_id": "a2", "free": 1}
