"""The in-memory collection fake behaves like MongoDB where the kernel and stores rely on it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import DESCENDING, DeleteOne, InsertOne, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.events import REGISTRY, new_event
from shared.query import count, total, where
from shared.store import only_duplicates
from shared.uow import UnitOfWork, Write
from tests.fakes.memory import MemoryDatabase, matches
from tests.fakes.relay import RecordingRelay


def test_filters() -> None:
    doc = {"_id": 1, "a": 3, "s": "x", "tags": ["p", "q"], "sub": {"n": 2}, "nil": None}
    assert matches(doc, {"a": 3, "sub.n": {"$eq": 2}})
    assert matches(doc, {"a": {"$gt": 2, "$lte": 3}, "s": {"$in": ["x", "y"]}})
    assert matches(doc, {"s": {"$nin": ["y"]}, "zz": {"$exists": False}})
    assert matches(doc, {"tags": "q", "missing": None, "nil": None})
    assert not matches(doc, {"a": {"$gt": "a"}})  # a number is never greater than a string
    assert not matches(doc, {"s": {"$ne": "x"}})
    assert matches(doc, {"$or": [{"a": 0}, {"s": "x"}]})
    assert matches({"e": "a@b"}, {"e": {"$type": "string"}})
    with pytest.raises(NotImplementedError):
        matches(doc, {"a": {"$regex": "x"}})


async def test_crud_sort_projection() -> None:
    coll = MemoryDatabase()["things"]
    await coll.insert_many([{"_id": i, "k": i % 3, "v": {"w": i}} for i in range(6)])
    found = await coll.find(where(k=1), {"v": 0}).sort("_id", DESCENDING).to_list(None)
    assert found == [{"_id": 4, "k": 1}, {"_id": 1, "k": 1}]
    first = coll.find({}, {"v.w": 1, "_id": 0}).sort([("k", 1), ("_id", -1)]).limit(2)
    # As nx-27017 answers: a dotted path included comes back as a flat key (MongoDB nests it).
    assert [d async for d in first] == [{"v.w": 3}, {"v.w": 0}]
    assert await coll.find_one({"_id": 3}, {"_id": 1}) == {"_id": 3}
    page = await coll.find({}).sort("_id", 1).skip(4).to_list(None)
    assert [d["_id"] for d in page] == [4, 5]
    got = await coll.find_one({"_id": 2})
    assert got is not None
    got["k"] = 99  # a copy: the stored document does not change
    assert (await coll.find_one({"_id": 2}) or {})["k"] == 2
    assert await coll.count_documents({"k": {"$gte": 1}}) == 4
    assert (await coll.delete_many({"k": 0})).deleted_count == 2
    assert (await coll.delete_one({"_id": 1})).deleted_count == 1
    assert await coll.count_documents({}) == 3


async def test_updates_and_upserts() -> None:
    coll = MemoryDatabase()["c"]
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    await coll.insert_one({"_id": "a", "n": 1, "at": when, "items": ["x"]})
    same = await coll.update_one({"_id": "a"}, {"$set": {"n": 1}})
    assert (same.matched_count, same.modified_count) == (1, 0)  # nothing changed
    done = await coll.update_one(
        {"_id": "a"},
        {
            "$inc": {"n": 2, "c.d": 1},
            "$max": {"hi": 5},
            "$min": {"n2": 1},
            "$unset": {"at": ""},
            "$addToSet": {"items": {"$each": ["x", "y"]}},
            "$push": {"log": 1},
        },
    )
    assert done.modified_count == 1
    doc = await coll.find_one({"_id": "a"})
    assert doc == {
        "_id": "a",
        "n": 3,
        "items": ["x", "y"],
        "c": {"d": 1},
        "hi": 5,
        "n2": 1,
        "log": [1],
    }
    up = await coll.update_one(
        {"_id": "b", "kind": {"$eq": "k"}},
        {"$set": {"x": 1}, "$setOnInsert": {"first": True}},
        upsert=True,
    )
    assert up.upserted_id == "b"
    assert await coll.find_one({"_id": "b"}) == {"_id": "b", "kind": "k", "x": 1, "first": True}
    after = await coll.find_one_and_update(
        {"_id": "b"}, {"$set": {"x": 2}}, return_document=ReturnDocument.AFTER
    )
    before = await coll.find_one_and_update({"_id": "b"}, {"$set": {"x": 3}})
    assert (after or {})["x"] == 2 and (before or {})["x"] == 2
    many = await coll.update_many({}, {"$set": {"all": 1}})
    assert many.modified_count == 2
    await coll.replace_one({"_id": "b"}, {"only": 1})
    assert await coll.find_one({"_id": "b"}) == {"_id": "b", "only": 1}
    await coll.insert_one({"_id": "t", "at": when})
    stored = await coll.find_one({"_id": "t"})
    assert (stored or {})["at"] == when.replace(microsecond=678000)  # BSON keeps milliseconds


async def test_scalars_written_by_path_come_back_as_nx_27017_stores_them() -> None:
    """nx-27017 writes a field an update names into the stored document as a SQLite value:
    a boolean reads back 1, a double with 15 significant digits, a date as a string; a whole
    subdocument keeps its values; an upsert's new document keeps them too."""
    coll = MemoryDatabase()["c"]
    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    third = 692.7833333333333
    await coll.insert_one({"_id": "a", "flag": True})
    same = await coll.update_one({"_id": "a"}, {"$set": {"flag": True}})
    assert same.modified_count == 0  # True == 1, yet 1 is what is stored now
    await coll.update_one(
        {"_id": "a"}, {"$set": {"at": when, "x": third, "sub": {"at": when, "on": True}}}
    )
    assert await coll.find_one({"_id": "a"}) == {
        "_id": "a",
        "flag": 1,
        "at": "2024-01-02 03:04:05.678000",
        "x": 692.783333333333,
        "sub": {"at": when.replace(microsecond=678000), "on": True},
    }
    await coll.update_one({"_id": "b"}, {"$set": {"x": third, "on": True}}, upsert=True)
    assert await coll.find_one({"_id": "b"}) == {"_id": "b", "x": third, "on": True}
    again = await coll.replace_one({"_id": "b"}, {"x": third, "on": True})
    assert again.modified_count == 1  # a replacement counts as modified on nx-27017
    upserted = await coll.find_one_and_update(
        {"_id": "t"},
        {"$set": {"at": when}, "$setOnInsert": {"first": True}},
        upsert=True,
        return_document=True,
    )
    assert upserted == {"_id": "t", "at": "2024-01-02 03:04:05.678000"}  # no $setOnInsert


async def test_unique_indexes_and_bulk_errors() -> None:
    coll = MemoryDatabase()["members"]
    await coll.create_index(
        "email", unique=True, partialFilterExpression={"email": {"$type": "string"}}
    )
    await coll.insert_one({"_id": 1, "email": "a@x"})
    await coll.insert_one({"_id": 2})  # not covered by the partial index
    await coll.insert_one({"_id": 3})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 4, "email": "a@x"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError):
        await coll.update_one({"_id": 2}, {"$set": {"email": "a@x"}})
    await coll.update_one({"_id": 1}, {"$set": {"email": "b@x"}})  # frees a@x
    await coll.insert_one({"_id": 5, "email": "a@x"})
    with pytest.raises(BulkWriteError) as err:
        await coll.bulk_write(
            [
                InsertOne({"_id": 6, "email": "b@x"}),
                UpdateOne({"_id": 3}, {"$set": {"n": 1}}),
                DeleteOne({"_id": 2}),
            ],
            ordered=False,
        )
    assert only_duplicates(err.value)
    assert [e["index"] for e in err.value.details["writeErrors"]] == [0]
    assert await coll.count_documents({}) == 3  # 1, 3, 5: the other writes landed
    info = await coll.index_information()
    assert info["email_1"]["unique"] is True
    assert await coll.database.list_collection_names() == ["members"]


async def test_a_unique_index_never_refuses_documents_without_the_field() -> None:
    """nx-27017's unique indexes are SQLite's: a missing or null key never collides (MongoDB
    indexes it as null and refuses the second document)."""
    coll = MemoryDatabase()["members"]
    await coll.create_index("email", unique=True)
    await coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3, "email": None}])
    await coll.insert_one({"_id": 4, "email": "a@x"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 5, "email": "a@x"})
    assert await coll.count_documents({}) == 4


async def test_aggregate_counts_and_sums() -> None:
    coll = MemoryDatabase()["hours"]
    await coll.insert_many(
        [{"_id": i, "status": "ok" if i % 2 else "no", "hours": i, "d": {"p": 1}} for i in range(5)]
    )
    assert await count(coll, {"status": "ok"}) == 2
    assert await total(coll, {"status": "no"}, "hours") == 6.0
    cursor = await coll.aggregate(
        [{"$match": where(status="ok")}, {"$group": {"_id": "$status", "h": {"$sum": "$hours"}}}]
    )
    assert await cursor.to_list(None) == [{"_id": "ok", "h": 4}]
    sums = await coll.aggregate([{"$group": {"_id": None, "p": {"$sum": "$d.p"}}}])
    assert [d async for d in sums] == [{"_id": None, "p": 5}]
    # nx-27017: a sum of no numbers is null, and $count of nothing is a zero (MongoDB: 0, none).
    none = await coll.aggregate([{"$group": {"_id": None, "q": {"$sum": "$nope"}}}])
    assert await none.to_list(None) == [{"_id": None, "q": None}]
    empty = await coll.aggregate([{"$match": where(status="x")}, {"$count": "n"}])
    assert await empty.to_list(None) == [{"n": 0}]


async def test_unit_of_work_runs_on_the_fake() -> None:
    db = MemoryDatabase()
    relay = RecordingRelay()
    joined = REGISTRY["member-joined"]
    event = new_event(joined.model_validate({**joined.example, "member_id": "m1"}))
    async with UnitOfWork(relay) as uow:
        uow.insert(db["members"], {"_id": "m1", "name": "A"}, [event])
        uow.bulk(db["tags"], [Write.insert({"_id": "t1"}), Write.insert({"_id": "t2"})])
    doc = await db["members"].find_one({"_id": "m1"})
    assert doc is not None and doc["outbox_pending"] == 1 and event.id in doc["outbox"]
    assert relay.kicks == [("members", "m1", [event])]
