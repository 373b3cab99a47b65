"""/v1/stats reads kept counters (services/engagement/counted.py): exact at a window's part hour,
across the periodic fold, after an erasure takes back what it deletes, and filled from the data
already there on the first start of a version that keeps them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.clock import epoch_ms, from_ms
from shared.events import MemberLeft
from shared.tally import first_whole_hour
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    join,
    member_joined,
    publish,
    wait_points,
)


async def test_windowed_figures_are_exact_at_the_part_hour_across_folds_and_erasure(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        jobs = s["engagement"].jobs
        now = datetime.now(UTC)
        week_ms = epoch_ms(now - timedelta(days=7))
        edge = from_ms(week_ms + (first_whole_hour(week_ms) - week_ms) // 2)  # the part hour
        whole = from_ms(first_whole_hour(week_ms) + 60_000)
        outside = from_ms(week_ms - 60_000)
        for name, at in (("at-edge", edge), ("whole", whole), ("outside", outside)):
            await publish(nc, member_joined(name, at))
        coordinator = await join(members, http, display_name="Clara", roles=["coordinator"])
        for name in ("at-edge", "whole", "outside"):
            await wait_until(lambda m=name: _known(http, m), message=f"{name} never known")
        # Posts at the same three moments (the API dates them by the service's clock), in the
        # clock's order: the consumer reads a time later than its clock as its clock.
        for at in (outside, edge, whole):
            s["engagement"].clock.at(at)
            r = await http.post("/v1/posts", json={"author_id": "whole", "kind": "question",
                                                   "title": "t"})  # fmt: skip
            assert r.status_code == 201, r.text
        s["engagement"].clock.at(now)
        hours = {"member_id": "whole", "hours": 3, "activity": "x", "date": f"{now:%Y-%m-%d}"}
        entry = (await http.post("/v1/hours", json=hours)).json()
        await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": coordinator})
        await wait_points(http, "whole", 1 + 3 * 3 + 3 * 2)

        expected = {"new_7d": 3, "posts_7d": 2, "questions_7d": 2, "hours_approved_30d": 3.0}
        assert _figures(await _stats(http), expected) == expected  # Clara joined now

        await publish(nc, MemberLeft(member_id="whole", erase=True, left_at=now))

        after = {"new_7d": 2, "posts_7d": 2, "questions_7d": 2, "hours_approved_30d": 0.0}

        async def taken_back() -> bool:  # her join and hours; her posts stay, as tombstones
            return _figures(await _stats(http), after) == after

        await wait_until(taken_back, message="the erasure did not take back what it deleted")
        # The periodic fold moves every delta into the checkpoint: the figures stay.
        await jobs.fold_counters(datetime.now(UTC) + timedelta(minutes=20))
        assert _figures(await _stats(http), after) == after


async def test_the_first_start_counts_the_month_already_stored(services, mongo_url, db_prefix):
    from pymongo import AsyncMongoClient

    now_ms = epoch_ms(datetime.now(UTC))
    day = 86_400_000
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, tz_aware=True)
    db = client[f"{db_prefix}_engagement"]
    # What a version without the windowed counters left: documents, no deltas.
    await db.posts.insert_many(
        [{"_id": str(uuid.uuid4()), "kind": kind, "created_ms": now_ms - days * day}
         for kind, days in (("question", 1), ("post", 2), ("post", 20), ("post", 40))]
    )  # fmt: skip
    await db.members.insert_many(
        [{"_id": f"m{i}", "status": "active", "joined_at_ms": now_ms - i * 3 * day}
         for i in range(5)]
    )  # fmt: skip
    await db.hours.insert_one({"_id": "h1", "member_id": "m1", "status": "approved",
                               "hours": 2.5, "decided_ms": now_ms - 3 * day})  # fmt: skip
    await client.close()
    async with services("members", "engagement") as s:
        stats = await _stats(s["engagement"].http)
    expected = {"posts_7d": 2, "questions_7d": 1, "new_7d": 3, "hours_approved_30d": 2.5}
    assert _figures(stats, expected) == expected


async def _known(http, member_id: str) -> bool:
    return (await http.get(f"/v1/members/{member_id}/engagement")).status_code == 200


async def _stats(http) -> dict:
    r = await http.get("/v1/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _figures(stats: dict, wanted: dict) -> dict:
    return {name: stats[name] for name in wanted}
