"""The shared member projection: kept from member-* events, forgotten for good on erasure."""

from __future__ import annotations

import uuid

from pymongo import AsyncMongoClient

from shared.events import MemberJoined, MemberLeft, MemberUpdated, utcnow
from shared.projection import MemberProjection


async def test_a_replayed_member_joined_does_not_bring_an_erased_member_back(mongo_url):
    client = AsyncMongoClient(mongo_url)
    db = client[f"t{uuid.uuid4().hex[:10]}_projection"]
    try:
        projection = MemberProjection(db["members"], ("display_name", "region", "contacts"))
        joined = MemberJoined.model_validate(MemberJoined.example)
        await projection.apply(joined)
        await projection.apply(MemberUpdated(member_id="m_01", changes={"region": "kazan"}))
        assert (await projection.get("m_01"))["region"] == "kazan"
        await projection.apply(MemberLeft(member_id="m_01", erase=True, left_at=utcnow()))
        await projection.apply(joined)  # redelivered long after, e.g. a replay from the stream
        kept = await projection.get("m_01")
        assert kept["status"] == "erased"
        assert "display_name" not in kept and "contacts" not in kept
    finally:
        await client.drop_database(db.name)
        await client.close()
