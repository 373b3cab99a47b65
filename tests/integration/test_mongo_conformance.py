"""Conformance of every MongoDB operator Sarafan relies on, on nx-27017 and on real MongoDB.

Runs against the `mongo_url` fixture: the embedded nx-27017 by default, a real MongoDB when
MONGODB_URL (or SARAFAN_TEST_DOCKER=1) is set. A failure here means a store module relies
on something the server does not do; fix the store, not this test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

DUPLICATE_KEY = 11000


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[AsyncDatabase]:
    """A database of its own for each test, dropped afterwards."""
    client: AsyncMongoClient = AsyncMongoClient(
        mongo_url, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture(scope="session")
async def on_nx_27017(mongo_url: str) -> bool:
    """True when the server is nx-27017 (its buildInfo names the process), not MongoDB."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    try:
        info = await client.admin.command("buildInfo")
    finally:
        await client.close()
    return info.get("process") == "nx_27017"


def known_nx_difference(request: pytest.FixtureRequest, on_nx: bool, reason: str) -> None:
    """Mark the running test as an expected failure on nx-27017 only. Strict: when a new
    nx-27017 fixes it the test XPASSes and fails, so the workaround can be dropped."""
    if on_nx:
        request.applymarker(pytest.mark.xfail(reason=f"nx-27017: {reason}", strict=True))


def _now() -> datetime:
    # BSON dates keep milliseconds: truncate so values compare equal after a round trip.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def test_insert_of_nested_document_keeps_booleans(db: AsyncDatabase) -> None:
    member = {
        "_id": "m1",
        "consent": {"terms": True, "marketing": False},
        "contacts": {"email": "a@example.org"},
        "outbox": {"e1": {"type": "member-joined", "data": {"erase": False, "ok": True}}},
    }
    await db.members.insert_one(member)

    stored = await db.members.find_one({"_id": "m1"})

    assert stored is not None
    assert stored["consent"]["terms"] is True
    assert stored["consent"]["marketing"] is False
    assert stored["outbox"]["e1"]["data"] == {"erase": False, "ok": True}
    assert stored["outbox"]["e1"]["data"]["ok"] is True


async def test_unique_index_rejects_a_duplicate_with_code_11000(db: AsyncDatabase) -> None:
    await db.members.create_index("email", unique=True)
    await db.members.insert_one({"_id": "m1", "email": "a@example.org"})

    with pytest.raises(DuplicateKeyError) as caught:
        await db.members.insert_one({"_id": "m2", "email": "a@example.org"})

    assert caught.value.code == DUPLICATE_KEY
    assert await db.members.count_documents({}) == 1


async def test_duplicate_id_is_error_11000(db: AsyncDatabase) -> None:
    await db.deliveries.insert_one({"_id": "e1:m1:email"})

    with pytest.raises(DuplicateKeyError) as caught:
        await db.deliveries.insert_one({"_id": "e1:m1:email"})

    assert caught.value.code == DUPLICATE_KEY


async def test_compound_unique_index_rejects_only_the_same_pair(db: AsyncDatabase) -> None:
    await db.reactions.create_index([("post_id", ASCENDING), ("member_id", ASCENDING)], unique=True)
    await db.reactions.insert_one({"post_id": "p1", "member_id": "m1"})
    await db.reactions.insert_one({"post_id": "p1", "member_id": "m2"})
    await db.reactions.insert_one({"post_id": "p2", "member_id": "m1"})

    with pytest.raises(DuplicateKeyError) as caught:
        await db.reactions.insert_one({"post_id": "p1", "member_id": "m1"})

    assert caught.value.code == DUPLICATE_KEY
    assert await db.reactions.count_documents({}) == 3


async def test_partial_unique_index_constrains_only_matching_documents(
    db: AsyncDatabase,
) -> None:
    await db.members.create_index(
        "referral_code", unique=True, partialFilterExpression={"referral_code": {"$exists": True}}
    )
    await db.members.insert_many([{"_id": "m1"}, {"_id": "m2"}])  # no code: not indexed
    await db.members.insert_one({"_id": "m3", "referral_code": "ABC"})

    with pytest.raises(DuplicateKeyError) as caught:
        await db.members.insert_one({"_id": "m4", "referral_code": "ABC"})

    assert caught.value.code == DUPLICATE_KEY
    assert await db.members.count_documents({}) == 3


async def test_ttl_index_is_accepted(db: AsyncDatabase) -> None:
    # Expiry itself is not tested: MongoDB's TTL monitor runs only once a minute, and
    # nx-27017 0.8.1 never removes expired documents (its TTL sweeper is not enabled).
    # Looked up by key, not by name: nx-27017 names indexes `idx_<collection>_<fields>`
    # whatever name the client asks for, so never refer to an index by name.
    await db.idempotency_keys.create_index("created_at", expireAfterSeconds=86_400)
    await db.idempotency_keys.create_index("created_at", expireAfterSeconds=86_400)  # restart

    info = await db.idempotency_keys.index_information()

    [ttl] = [spec for spec in info.values() if spec["key"] == [("created_at", 1)]]
    assert ttl.get("expireAfterSeconds") == 86_400


async def test_outbox_subdocument_set_then_guarded_unset_runs_once(db: AsyncDatabase) -> None:
    await db.members.insert_one({"_id": "m1", "email": "old@example.org", "outbox_pending": 0})
    event = {"id": "e1", "type": "member-updated", "data": {"changes": {"email": "new"}}}

    await db.members.update_one(
        {"_id": "m1"},
        {"$set": {"email": "new@example.org", "outbox.e1": event}, "$inc": {"outbox_pending": 1}},
    )
    pending = await db.members.find({"outbox_pending": {"$gt": 0}}).to_list(None)

    assert [doc["_id"] for doc in pending] == ["m1"]
    assert pending[0]["outbox"] == {"e1": event}

    guarded = {"_id": "m1", "outbox.e1": {"$exists": True}}
    unset = {"$unset": {"outbox.e1": ""}, "$inc": {"outbox_pending": -1}}
    first = await db.members.update_one(guarded, unset)
    second = await db.members.update_one(guarded, unset)

    assert (first.modified_count, second.modified_count) == (1, 0)
    stored = await db.members.find_one({"_id": "m1"})
    assert stored is not None
    assert stored["outbox_pending"] == 0
    assert "e1" not in (stored.get("outbox") or {})


async def test_find_by_counter_greater_than_zero(db: AsyncDatabase) -> None:
    await db.members.insert_many(
        [
            {"_id": "none", "outbox_pending": 0},
            {"_id": "two", "outbox_pending": 2},
            {"_id": "missing"},
            {"_id": "one", "outbox_pending": 1},
        ]
    )

    found = await db.members.find({"outbox_pending": {"$gt": 0}}).sort("_id", 1).to_list(None)

    assert [doc["_id"] for doc in found] == ["one", "two"]


async def test_conditional_upsert_applies_an_event_once(db: AsyncDatabase) -> None:
    async def apply(event_id: str, points: int) -> None:
        try:
            await db.scores.update_one(
                {"_id": "m1", f"applied.{event_id}": {"$exists": False}},
                {"$inc": {"score": points}, "$set": {f"applied.{event_id}": _now()}},
                upsert=True,
            )
        except DuplicateKeyError as exc:
            # The document exists but the filter did not match: MongoDB tries to insert.
            assert exc.code == DUPLICATE_KEY

    await apply("e1", 5)
    await apply("e1", 5)  # redelivery
    await apply("e2", 3)
    await apply("e2", 3)

    stored = await db.scores.find_one({"_id": "m1"})
    assert stored is not None
    assert stored["score"] == 8
    assert set(stored["applied"]) == {"e1", "e2"}


async def test_set_on_insert_and_max_of_numbers_in_one_upsert(db: AsyncDatabase) -> None:
    early = _epoch_ms(_now())
    later, earliest = early + 3_600_000, early - 3_600_000

    async def touch(at: int) -> None:
        await db.activity.update_one(
            {"_id": "m1"},
            {"$setOnInsert": {"first_seen_ms": at}, "$max": {"last_active_ms": at}},
            upsert=True,
        )

    await touch(early)
    await touch(later)
    await touch(earliest)

    stored = await db.activity.find_one({"_id": "m1"})
    assert stored is not None
    assert (stored["first_seen_ms"], stored["last_active_ms"]) == (early, later)


async def test_lease_in_epoch_milliseconds_is_claimed_once_until_it_expires(
    db: AsyncDatabase,
) -> None:
    # docs/patterns.md section 4 with the time as integer epoch milliseconds: identical on both
    # servers, unlike a date `$set` by path (docs/patterns.md, section 6).
    now = _epoch_ms(_now())
    await db.jobs.insert_one({"_id": "drifting-scan", "lease_until_ms": 0})

    async def claim(at: int, owner: str) -> dict | None:
        return await db.jobs.find_one_and_update(
            {"_id": "drifting-scan", "lease_until_ms": {"$lt": at}},
            {"$set": {"lease_until_ms": at + 300_000, "owner": owner}},
            return_document=ReturnDocument.AFTER,
        )

    first = await claim(now, "replica-a")
    second = await claim(now + 60_000, "replica-b")
    after_expiry = await claim(now + 360_000, "replica-b")

    assert first is not None
    assert (first["owner"], first["lease_until_ms"]) == ("replica-a", now + 300_000)
    assert second is None
    assert after_expiry is not None
    assert after_expiry["owner"] == "replica-b"
    assert await db.jobs.count_documents({"lease_until_ms": {"$gt": now + 600_000}}) == 1


async def test_find_one_and_update_with_sort_takes_the_first(db: AsyncDatabase) -> None:
    now = _now()
    await db.campaigns.insert_many(
        [
            {"_id": "c2", "status": "scheduled", "starts_at": now - timedelta(minutes=1)},
            {"_id": "c1", "status": "scheduled", "starts_at": now - timedelta(minutes=5)},
            {"_id": "c3", "status": "active", "starts_at": now - timedelta(minutes=9)},
        ]
    )

    started = await db.campaigns.find_one_and_update(
        {"status": "scheduled", "starts_at": {"$lte": now}},
        {"$set": {"status": "active"}},
        sort=[("starts_at", ASCENDING)],
        return_document=ReturnDocument.AFTER,
    )

    assert started is not None
    assert (started["_id"], started["status"]) == ("c1", "active")
    assert await db.campaigns.count_documents({"status": "scheduled"}) == 1


async def test_bulk_write_of_unordered_upserts(db: AsyncDatabase) -> None:
    await db.stats.insert_one({"_id": "m1", "posts": 1})
    ops = [
        UpdateOne({"_id": "m1"}, {"$inc": {"posts": 1}}, upsert=True),
        UpdateOne({"_id": "m2"}, {"$inc": {"posts": 1}}, upsert=True),
        UpdateOne({"_id": "m3"}, {"$inc": {"posts": 2}}, upsert=True),
    ]

    result = await db.stats.bulk_write(ops, ordered=False)

    assert result.matched_count == 1
    assert result.upserted_count == 2
    stored = await db.stats.find().sort("_id", 1).to_list(None)
    assert [(doc["_id"], doc["posts"]) for doc in stored] == [("m1", 2), ("m2", 1), ("m3", 2)]


async def test_insert_many_unordered_reports_exactly_the_duplicates(db: AsyncDatabase) -> None:
    await db.deliveries.insert_many([{"_id": "d1"}, {"_id": "d3"}])

    with pytest.raises(BulkWriteError) as caught:
        await db.deliveries.insert_many(
            [{"_id": "d1"}, {"_id": "d2"}, {"_id": "d3"}, {"_id": "d4"}], ordered=False
        )

    errors = caught.value.details["writeErrors"]
    assert [error["code"] for error in errors] == [DUPLICATE_KEY, DUPLICATE_KEY]
    assert sorted(error["index"] for error in errors) == [0, 2]
    assert caught.value.details["nInserted"] == 2
    # Not distinct("_id"): nx-27017 answers it with "JSON path error near '_id'".
    stored = await db.deliveries.find({}, {"_id": 1}).sort("_id", 1).to_list(None)
    assert [doc["_id"] for doc in stored] == ["d1", "d2", "d3", "d4"]


async def test_cursor_pagination_by_id(db: AsyncDatabase) -> None:
    await db.members.insert_many([{"_id": f"m{i:02d}"} for i in range(7)])

    pages: list[list[str]] = []
    cursor = ""
    while True:
        page = await db.members.find({"_id": {"$gt": cursor}}).sort("_id", 1).limit(3).to_list(None)
        if not page:
            break
        pages.append([doc["_id"] for doc in page])
        cursor = page[-1]["_id"]

    assert pages == [["m00", "m01", "m02"], ["m03", "m04", "m05"], ["m06"]]


async def test_query_on_an_array_field_matches_an_element(db: AsyncDatabase) -> None:
    await db.members.insert_many(
        [
            {"_id": "m1", "roles": ["volunteer", "coordinator"]},
            {"_id": "m2", "roles": ["volunteer"]},
            {"_id": "m3", "roles": ["staff"]},
        ]
    )

    coordinators = await db.members.find({"roles": "coordinator"}).to_list(None)
    either = await db.members.find({"roles": {"$in": ["coordinator", "staff"]}}).to_list(None)

    assert [doc["_id"] for doc in coordinators] == ["m1"]
    assert sorted(doc["_id"] for doc in either) == ["m1", "m3"]


async def test_aggregation_match_group_sort_project(db: AsyncDatabase) -> None:
    await db.entries.insert_many(
        [
            {"campaign_id": "c1", "member_id": "m1", "points": 5},
            {"campaign_id": "c1", "member_id": "m2", "points": 7},
            {"campaign_id": "c1", "member_id": "m1", "points": 4},
            {"campaign_id": "c2", "member_id": "m3", "points": 100},
        ]
    )
    pipeline = [
        {"$match": {"campaign_id": "c1"}},
        {"$group": {"_id": "$member_id", "points": {"$sum": "$points"}, "entries": {"$sum": 1}}},
        {"$sort": {"points": -1, "_id": 1}},
        {"$project": {"_id": 0, "member_id": "$_id", "points": 1, "entries": 1}},
    ]

    rows = await (await db.entries.aggregate(pipeline)).to_list(None)

    assert rows == [
        {"member_id": "m1", "points": 9, "entries": 2},
        {"member_id": "m2", "points": 7, "entries": 1},
    ]


async def test_aggregation_unwind_and_facet(db: AsyncDatabase) -> None:
    await db.posts.insert_many(
        [
            {"_id": "p1", "kind": "question", "tags": ["food", "help"]},
            {"_id": "p2", "kind": "post", "tags": ["food"]},
            {"_id": "p3", "kind": "question", "tags": []},
        ]
    )
    pipeline = [
        {
            "$facet": {
                "by_kind": [{"$group": {"_id": "$kind", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}],
                "by_tag": [
                    {"$unwind": "$tags"},
                    {"$group": {"_id": "$tags", "n": {"$sum": 1}}},
                    {"$sort": {"_id": 1}},
                ],
            }
        }
    ]

    [facets] = await (await db.posts.aggregate(pipeline)).to_list(None)

    assert facets["by_kind"] == [{"_id": "post", "n": 1}, {"_id": "question", "n": 2}]
    assert facets["by_tag"] == [{"_id": "food", "n": 2}, {"_id": "help", "n": 1}]


async def test_count_documents_with_and_without_filter(db: AsyncDatabase) -> None:
    await db.members.insert_many(
        [{"_id": "m1", "region": "north"}, {"_id": "m2", "region": "south"}, {"_id": "m3"}]
    )

    assert await db.members.count_documents({}) == 3
    assert await db.members.count_documents({"region": "north"}) == 1
    assert await db.members.count_documents({"region": {"$exists": False}}) == 1


async def test_delete_one_and_delete_many(db: AsyncDatabase) -> None:
    await db.messages.insert_many(
        [{"_id": f"x{i}", "member_id": "m1" if i < 3 else "m2"} for i in range(5)]
    )

    one = await db.messages.delete_one({"_id": "x0"})
    many = await db.messages.delete_many({"member_id": "m1"})
    none = await db.messages.delete_one({"_id": "x0"})

    assert (one.deleted_count, many.deleted_count, none.deleted_count) == (1, 2, 0)
    remaining = await db.messages.find().sort("_id", 1).to_list(None)
    assert [doc["_id"] for doc in remaining] == ["x3", "x4"]


# Known nx-27017 0.8.1 differences. Each test states MongoDB's documented behaviour; on
# nx-27017 it is a strict expected failure (or, for booleans, passes on both because the
# code reads through pydantic). The store code must use the form that works on both.


class _Consent(BaseModel):
    terms: bool
    marketing: bool


class _Member(BaseModel):
    active: bool
    consent: _Consent


async def test_boolean_set_by_path_reads_as_true_through_a_model(db: AsyncDatabase) -> None:
    """Known nx-27017 difference (docs/patterns.md, section 6): `$set` of a boolean by a
    top-level or dotted path stores 1/0 instead of true/false. Our code never compares raw
    values with `is True` and reads documents through pydantic models, whose lax bool parsing
    gives True/False on both servers. This test passes on both and shows what each stores."""
    await db.members.insert_one(
        {"_id": "m1", "active": False, "consent": {"terms": True, "marketing": False}}
    )

    await db.members.update_one(
        {"_id": "m1"}, {"$set": {"active": True, "consent.marketing": True}}
    )
    raw = await db.members.find_one({"_id": "m1"})

    assert raw is not None
    assert raw["active"] in (True, 1)  # True on MongoDB, 1 on nx-27017
    assert bool(raw["active"]) is True
    assert bool(raw["consent"]["marketing"]) is True
    member = _Member.model_validate(raw)
    assert member.active is True
    assert member.consent == _Consent(terms=True, marketing=True)


async def test_max_of_a_date(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(request, on_nx_27017, "`$max` of a date never replaces a stored date")
    early, later = _now(), _now() + timedelta(hours=1)
    await db.activity.insert_one({"_id": "m1", "last_active_at": early})

    await db.activity.update_one({"_id": "m1"}, {"$max": {"last_active_at": later}})
    await db.activity.update_one({"_id": "m1"}, {"$max": {"last_active_at": early}})

    stored = await db.activity.find_one({"_id": "m1"})
    assert stored is not None
    assert stored["last_active_at"] == later


async def test_set_of_a_date_by_path_keeps_a_date(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(
        request,
        on_nx_27017,
        "`$set`/`$min` of a date by a top-level or dotted path stores the string "
        "'YYYY-MM-DD HH:MM:SS[.ffffff]', which range queries on dates then miss",
    )
    now = _now()
    await db.scores.insert_one({"_id": "m1", "applied": {}})

    await db.scores.update_one({"_id": "m1"}, {"$set": {"updated_at": now, "applied.e1": now}})

    stored = await db.scores.find_one({"_id": "m1"})
    assert stored is not None
    assert (stored["updated_at"], stored["applied"]["e1"]) == (now, now)
    assert await db.scores.count_documents({"updated_at": {"$lte": now}}) == 1


async def test_set_of_a_whole_subdocument_keeps_dates_and_booleans(db: AsyncDatabase) -> None:
    # The form that is safe on nx-27017 for dates and booleans (see the tests above).
    now = _now()
    await db.jobs.insert_one({"_id": "j1"})

    await db.jobs.update_one({"_id": "j1"}, {"$set": {"lease": {"until": now, "held": True}}})

    stored = await db.jobs.find_one({"_id": "j1"})
    assert stored is not None
    assert stored["lease"] == {"until": now, "held": True}
    assert stored["lease"]["held"] is True
    assert await db.jobs.count_documents({"lease.until": {"$lte": now}}) == 1


async def test_lease_with_dates_is_claimed_once_until_it_expires(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(
        request, on_nx_27017, "the claim `$set`s lease_until by path, storing a string"
    )
    now = _now()
    await db.jobs.insert_one({"_id": "drifting-scan", "lease_until": now - timedelta(seconds=1)})

    async def claim(at: datetime, owner: str) -> dict | None:
        return await db.jobs.find_one_and_update(
            {"_id": "drifting-scan", "lease_until": {"$lt": at}},
            {"$set": {"lease_until": at + timedelta(minutes=5), "owner": owner}},
            return_document=ReturnDocument.AFTER,
        )

    first = await claim(now, "replica-a")
    second = await claim(now + timedelta(minutes=1), "replica-b")
    after_expiry = await claim(now + timedelta(minutes=6), "replica-b")

    assert first is not None
    assert first["owner"] == "replica-a"
    assert second is None
    assert after_expiry is not None
    assert after_expiry["lease_until"] == now + timedelta(minutes=11)
    assert await db.jobs.count_documents({"lease_until": {"$gt": now}}) == 1


async def test_compound_index_naming_id_accepts_inserts(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(
        request, on_nx_27017, "a compound index naming `_id` fails every insert (JSON path error)"
    )
    # Why the stores index plain fields (members: `region`; listings: a `list_key` string).
    await db.members.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    await db.members.insert_one({"_id": "m1", "region": "moscow"})
    assert await db.members.count_documents({"region": "moscow"}) == 1


async def test_date_comparison_keeps_milliseconds(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(request, on_nx_27017, "dates compare to the second, not the millisecond")
    # Why pagination keys are `<epoch ms>:<id>` strings and ordered times are epoch ms.
    base = datetime(2026, 11, 27, 10, 0, 0, 100_000, tzinfo=UTC)
    await db.members.insert_many(
        [{"_id": "a", "at": base}, {"_id": "b", "at": base + timedelta(milliseconds=500)}]
    )
    later = await db.members.find({"at": {"$gt": base}}).to_list(None)
    assert [d["_id"] for d in later] == ["b"]


async def test_guards_beside_an_id_in_update_filters_match_as_mongodb_does(
    db: AsyncDatabase,
) -> None:
    """The write-filter forms the services use (tests/query_plans.py, WRITE_OPERATORS and
    GUARD_OPERATORS): `$nin` and `$in` beside an `_id` equality, in updates and upserts, on a
    document with and without the guarded field."""
    await db.m.insert_many(
        [{"_id": "a", "status": "active"}, {"_id": "b", "status": "erased"}, {"_id": "c"}]
    )
    guard = {"$nin": ["erased"]}
    for member in ("a", "b", "c"):
        result = await db.m.update_one({"_id": member, "status": guard}, {"$set": {"seen": 1}})
        assert result.modified_count == (0 if member == "b" else 1), member
    # An upsert over a document lacking the field updates it; over a tombstone it collides.
    await db.m.update_one({"_id": "d", "status": guard}, {"$set": {"x": 1}}, upsert=True)
    await db.m.update_one({"_id": "c", "status": guard}, {"$set": {"x": 1}}, upsert=True)
    try:
        await db.m.update_one({"_id": "b", "status": guard}, {"$set": {"x": 1}}, upsert=True)
    except DuplicateKeyError:
        pass
    docs = {d["_id"]: d async for d in db.m.find({})}
    assert docs["c"]["x"] == 1 and docs["d"]["x"] == 1 and "x" not in docs["b"]
    moved = await db.m.update_one(
        {"_id": "a", "status": {"$in": ["active", "left"]}}, {"$set": {"status": "left"}}
    )
    assert moved.modified_count == 1
    assert (await db.m.find_one({"_id": "b"}))["status"] == "erased"
    # Ranges and $exists beside secondary equalities, as the stores' guards write them.
    await db.m.insert_one({"_id": "e", "n": 5, "k": "x"})
    assert (
        await db.m.update_one({"k": {"$eq": "x"}, "n": {"$lt": 9}}, {"$inc": {"n": 1}})
    ).modified_count == 1
    assert (
        await db.m.update_one({"_id": "e", "z": {"$exists": False}}, {"$set": {"z": 1}})
    ).modified_count == 1
    assert (
        await db.m.update_one({"_id": "e", "z": {"$exists": False}}, {"$set": {"z": 2}})
    ).modified_count == 0


async def test_a_dotted_projection_returns_nested_documents(
    db: AsyncDatabase, on_nx_27017: bool, request: pytest.FixtureRequest
) -> None:
    known_nx_difference(
        request, on_nx_27017, "a dotted projection comes back as a flat key ('seats.s1': 1)"
    )
    # Why reads of one entry of a keyed subdocument go through shared.store.projected.
    await db.shifts.insert_one({"_id": "s", "seats": {"s1": 1, "s2": 2}, "free": 3})
    got = await db.shifts.find_one({"_id": "s"}, {"seats.s1": 1})
    assert got == {"_id": "s", "seats": {"s1": 1}}


async def test_projected_reads_one_entry_of_a_keyed_subdocument_on_either_server(
    db: AsyncDatabase,
) -> None:
    from shared.store import projected

    await db.shifts.insert_one({"_id": "s", "unsettled": {"su1": {"k": 1, "to": "confirmed"}}})
    got = await db.shifts.find_one({"_id": "s"}, {"unsettled.su1": 1, "unsettled.su2": 1})
    assert projected(got, "unsettled.su1") == {"k": 1, "to": "confirmed"}
    assert projected(got, "unsettled.su2") is None


async def test_concurrent_conditional_claims_on_one_document_never_overbook(
    db: AsyncDatabase,
) -> None:
    """The activities ledger's seat claim: one conditional update per claim on one document
    (`free > 0`, the claimant in no list), fifty at once for ten seats: exactly ten match, and
    the other forty join the line with distinct places, counted in the same update."""
    await db.shifts.insert_one(
        {"_id": "s", "free": 10, "confirmed": 0, "waitlisted": 0, "seats": {}, "queue": {}}
    )

    async def claim(n: int) -> tuple[str, int | None]:
        su = f"su{n}"
        absent = {f"seats.{su}": {"$exists": False}, f"queue.{su}": {"$exists": False}}
        seat = await db.shifts.find_one_and_update(
            {"_id": "s", "free": {"$gt": 0}, **absent},
            {"$set": {f"seats.{su}": 1}, "$inc": {"free": -1, "confirmed": 1}},
        )
        if seat is not None:
            return "confirmed", None
        after = await db.shifts.find_one_and_update(
            {"_id": "s", **absent},
            {"$set": {f"queue.{su}": 1}, "$inc": {"waitlisted": 1}},
            projection={"waitlisted": 1},
            return_document=ReturnDocument.AFTER,
        )
        assert after is not None
        return "waitlisted", int(after["waitlisted"])

    results = await asyncio.gather(*(claim(n) for n in range(50)))

    assert sum(1 for status, _ in results if status == "confirmed") == 10
    assert sorted(p for status, p in results if status == "waitlisted") == list(range(1, 41))
    stored = await db.shifts.find_one({"_id": "s"})
    assert stored is not None
    assert (stored["free"], stored["confirmed"], stored["waitlisted"]) == (0, 10, 40)
    assert len(stored["seats"]) == 10 and len(stored["queue"]) == 40
    # A second claim for one already seated matches nothing.
    again = await db.shifts.update_one(
        {"_id": "s", "free": {"$gt": -1}, "seats.su0": {"$exists": False},
         "queue.su0": {"$exists": False}},
        {"$inc": {"confirmed": 1}},
    )  # fmt: skip
    assert again.modified_count == 0


async def test_unset_of_one_keyed_entry_and_counters_in_one_guarded_update(
    db: AsyncDatabase,
) -> None:
    """Giving a seat back: the entry goes and the counters move once, guarded by the entry's
    value (a second give-back matches nothing)."""
    await db.shifts.insert_one(
        {"_id": "s", "free": 0, "confirmed": 2, "seats": {"a": 1, "b": 2}, "marks": {}}
    )
    for _ in range(2):
        await db.shifts.update_one(
            {"_id": "s", "seats.b": 2, "marks.b": {"$exists": False}},
            {"$unset": {"seats.b": ""}, "$inc": {"free": 1, "confirmed": -1},
             "$set": {"marks.b": {"op": "x", "to": "cancelled"}}},
        )  # fmt: skip
    stored = await db.shifts.find_one({"_id": "s"})
    assert stored is not None
    assert stored["seats"] == {"a": 1} and (stored["free"], stored["confirmed"]) == (1, 1)
    cleared = await db.shifts.update_one(
        {"_id": "s", "marks.b.op": "x"}, {"$unset": {"marks.b": ""}}
    )
    assert cleared.modified_count == 1
    assert (await db.shifts.find_one({"_id": "s"}))["marks"] == {}
