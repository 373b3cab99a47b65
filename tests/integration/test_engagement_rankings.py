"""Segments read in their rank keys return the members, in the order, that sorting by decayed
score gave before: ties, pages, leavers, the window's edge; and a standing without keys (written
by an older version) is keyed when a read meets it, never silently left out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.engagement import domain
from shared.clock import epoch_ms
from shared.events import MemberLeft, PostCreated
from tests.helpers import wait_until
from tests.integration.test_engagement_support import member_joined, publish

THRESHOLDS = {"participant": 2, "active": 8, "loyal": 14, "ambassador": 40}
DAY = timedelta(days=1)


def posted(member_id: str, at: datetime) -> PostCreated:
    return PostCreated(post_id=str(uuid.uuid4()), author_id=member_id, kind="post", title="t",
                       created_at=at)  # fmt: skip


def sorted_as_before(docs: list[dict], segment: str, now: datetime, rules: domain.Rules) -> list:
    """The segment as the server sorted it before the rank keys: its members by decayed score
    (`lscore`, the same order at every moment), then the newest (new-promising), then the id."""
    now_ms = epoch_ms(now)
    if segment == "new-promising":
        since = now_ms - int(rules.new_member_window.total_seconds() * 1000)
        inside = [d for d in docs if d.get("active") == 1 and d.get("joined_ms", 0) >= since]
        return [d["_id"] for d in sorted(
            inside, key=lambda d: (-d["lscore"], -d["joined_ms"], d["_id"]))]  # fmt: skip
    if segment == "loyal":
        inside = [d for d in docs if d.get("active") == 1 and d.get("level") in domain.LOYAL_LEVELS]
    else:
        cut = now_ms - int(rules.drift_after.total_seconds() * 1000)
        inside = [
            d for d in docs
            if d.get("active") == 1 and d.get("level") in domain.DRIFT_LEVELS
            and 0 < d.get("last_ms", 0) <= cut
        ]  # fmt: skip
    return [d["_id"] for d in sorted(inside, key=lambda d: (-d["lscore"], d["_id"]))]


async def walk(http, segment: str, limit: int) -> list[str]:
    """Every page of a segment, following next_cursor."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await http.get(f"/v1/segments/{segment}", params=params)
        assert r.status_code == 200, r.text
        ids += [row["member_id"] for row in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return ids


async def test_segments_list_the_same_members_in_the_same_order_as_sorting_by_score(services, nc):
    async with services("members", "engagement", SARAFAN_ENGAGEMENT_LEVELS=THRESHOLDS) as s:
        http, store = s["engagement"].http, s["engagement"].store
        rules = s["engagement"].app.state.context.rules
        now = datetime.now(UTC).replace(microsecond=0)
        same_moment = now - 3 * DAY  # an import: joins that tie to the millisecond
        plan = {
            **{f"tie{i}": (same_moment, []) for i in range(4)},
            **{f"busy{i}": (now - (i + 1) * DAY, [now - DAY] * (i % 4 + 1)) for i in range(6)},
            **{f"away{i}": (now - 40 * DAY, [now - 20 * DAY] * (i % 3 + 2)) for i in range(5)},
            "twin-a": (now - 5 * DAY, [now - 2 * DAY] * 3),
            "twin-b": (now - 5 * DAY, [now - 2 * DAY] * 3),
            "old": (now - 45 * DAY, []),
            "leaver": (now - DAY, [now - DAY] * 4),
        }
        for member_id, (at, _) in plan.items():
            await publish(nc, member_joined(member_id, at))
        for member_id, (_, posts) in plan.items():
            for at in posts:
                await publish(nc, posted(member_id, at))
        await publish(nc, MemberLeft(member_id="leaver", erase=False, left_at=now))

        async def all_written() -> bool:
            docs = await store.standing.find({}).to_list(None)
            points = {d["_id"]: d.get("points_total", 0) for d in docs}
            return (
                len(docs) == len(plan)
                and all(points.get(m) == 1 + 5 * len(posts) for m, (_, posts) in plan.items())
                and any(d["_id"] == "leaver" and d.get("active") == 0 for d in docs)
            )

        await wait_until(all_written, timeout=20, message="the standings were never all written")
        docs = await store.standing.find({}).to_list(None)
        for segment in ("new-promising", "loyal", "drifting"):
            expected = sorted_as_before(docs, segment, now, rules)
            assert expected, segment  # each segment has members to order
            assert await walk(http, segment, limit=3) == expected, segment
            assert await walk(http, segment, limit=500) == expected, segment
        assert "leaver" not in await walk(http, "new-promising", 500)
        assert "old" not in await walk(http, "new-promising", 500)


async def test_a_standing_written_without_keys_is_keyed_when_a_read_meets_it(services, nc):
    async with services("members", "engagement", SARAFAN_ENGAGEMENT_LEVELS=THRESHOLDS) as s:
        http, store = s["engagement"].http, s["engagement"].store
        now_ms = epoch_ms(datetime.now(UTC))
        day = 86_400_000
        # As an older version wrote them: figures and lscore, no segment keys, no keys_v.
        await store.standing.insert_many(
            [
                {"_id": "old-new", "active": 1, "level": "participant", "lscore": 700.0,
                 "joined_ms": now_ms - day, "last_ms": now_ms - day, "version": 3},
                {"_id": "old-loyal", "active": 1, "level": "loyal", "lscore": 690.0,
                 "joined_ms": now_ms - 90 * day, "last_ms": now_ms - day, "version": 9},
                {"_id": "old-drifting", "active": 1, "level": "active", "lscore": 680.0,
                 "joined_ms": now_ms - 90 * day, "last_ms": now_ms - 20 * day},
                {"_id": "old-leaver", "active": 0, "level": "loyal", "lscore": 800.0,
                 "joined_ms": now_ms - day, "version": 2},
            ]
        )  # fmt: skip

        async def segment(name: str) -> list[str]:
            r = await http.get(f"/v1/segments/{name}")
            assert r.status_code == 200, r.text
            return [row["member_id"] for row in r.json()["items"]]

        assert await segment("new-promising") == ["old-new"]
        assert await segment("loyal") == ["old-loyal"]
        assert await segment("drifting") == ["old-drifting"]
        keyed = {d["_id"]: d for d in await store.standing.find({}).to_list(None)}
        assert all(d.get("keys_v") == 1 for d in keyed.values())
        assert "new_key" in keyed["old-new"] and "loyal_key" not in keyed["old-leaver"]
        # The new-promising key goes when the window closes: the settling write is due then.
        assert keyed["old-new"]["due_ms"] == now_ms - day + 30 * day + 1
