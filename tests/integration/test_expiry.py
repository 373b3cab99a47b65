"""Old processed-event and Idempotency-Key records are deleted, on nx-27017 too (whose TTL
indexes never expire): the collections do not grow with every event and request for ever."""

from __future__ import annotations

from datetime import timedelta

from shared.bus import PROCESSED_TTL
from shared.events import utcnow
from shared.http import IDEMPOTENCY_TTL
from shared.store import epoch_ms


async def test_records_past_their_time_are_deleted_and_fresh_ones_kept(services):
    async with services("members") as s:
        runtime = s["members"].runtime
        now = epoch_ms(utcnow())
        old_event = now - int(PROCESSED_TTL.total_seconds() * 1000) - 1
        old_key = now - int(IDEMPOTENCY_TTL.total_seconds() * 1000) - 1
        processed, keys = runtime.db["processed_events"], runtime.db["idempotency_keys"]
        await processed.insert_many(
            [{"_id": "c:old", "at_ms": old_event}, {"_id": "c:new", "at_ms": now}]
        )
        await keys.insert_many(
            [{"_id": "/v1/x:old", "created_ms": old_key}, {"_id": "/v1/x:new", "created_ms": now}]
        )
        await runtime.expire()
        assert [d["_id"] async for d in processed.find({"_id": {"$in": ["c:old", "c:new"]}})] == [
            "c:new"
        ]
        left = [d["_id"] async for d in keys.find({"_id": {"$in": ["/v1/x:old", "/v1/x:new"]}})]
        assert left == ["/v1/x:new"]
        assert timedelta(hours=24) <= IDEMPOTENCY_TTL
