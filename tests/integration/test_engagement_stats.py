"""Community health on a known small community: /v1/stats, the gauges, leaderboards, segments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.events import MemberLeft, PostCreated
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    engagement_of,
    join,
    publish,
    wait_points,
)


async def post(http, author: str, kind: str = "post", title: str = "t") -> str:
    r = await http.post("/v1/posts", json={"author_id": author, "kind": kind, "title": title})
    assert r.status_code == 201, r.text
    return str(r.json()["post_id"])


async def test_stats_figures_and_gauges_of_a_known_small_community(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        clock = s["engagement"].clock
        anna = await join(members, http, display_name="Anna", email="anna@example.org")
        code = (await members.get(f"/v1/members/{anna}")).json()["referral_code"]
        boris = await join(members, http, display_name="Boris", referral_code=code)
        clara = await join(members, http, display_name="Clara", roles=["coordinator"])
        dmitry = await join(members, http, display_name="Dmitry")
        await publish(nc, MemberLeft(member_id=dmitry, erase=False, left_at=datetime.now(UTC)))

        start = datetime.now(UTC)
        clock.at(start - timedelta(days=40))
        await post(http, anna, "question", "old, never answered")  # outside every window
        clock.at(start)
        await post(http, anna, "post")
        question = await post(http, anna, "question")
        await post(http, clara, "question", "nobody answers this one")
        clock.at(start + timedelta(seconds=600))
        await http.post(f"/v1/posts/{question}/comments", json={"author_id": boris, "body": "here"})
        entry = (
            await http.post(
                "/v1/hours",
                json={"member_id": anna, "hours": 2, "activity": "x", "date": "2026-11-01"},
            )
        ).json()
        await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": clara})
        clock.at(start + timedelta(seconds=601))
        # anna: joined 1 + referral 15 + old question 3 (decayed) + post 5 + question 3 + hours 4
        await wait_points(http, anna, 31)
        await wait_points(http, boris, 3)

        async def left() -> bool:
            return (await http.get("/v1/stats")).json()["members_total"] == 3

        await wait_until(left)
        stats = (await http.get("/v1/stats")).json()
        assert stats | {"as_of": None} == {
            "as_of": None,
            "members_total": 3,  # dmitry left
            "active_7d": 3,  # anna, boris, clara (joining alone is not activity)
            "active_30d": 3,
            "new_7d": 4,  # joins of the week, dmitry's included
            "loyal_pool": 0,
            "posts_7d": 3,
            "questions_7d": 2,
            "answered_by_community_ratio": 0.5,  # boris answered anna; clara's is open
            "median_seconds_to_first_answer": 600.0,
            "referral_join_share": 0.25,  # boris of four joins
            "returned_after_drift_30d": 0,
            "drifting": 0,
            "hours_approved_30d": 2.0,
        }
        metrics = (await http.get("/metrics")).text
        for figure, value in stats.items():
            if figure != "as_of":
                line = f'sarafan_community_{figure}{{service="engagement"}} {float(value)}'
                assert line in metrics, line


async def test_undefined_ratios_are_null_and_nan_gauges(services):
    async with services("members", "engagement") as s:
        http = s["engagement"].http
        stats = (await http.get("/v1/stats")).json()
        assert stats["answered_by_community_ratio"] is None
        assert stats["median_seconds_to_first_answer"] is None
        assert stats["referral_join_share"] is None
        assert stats["members_total"] == 0
        metrics = (await http.get("/metrics")).text
        assert 'sarafan_community_referral_join_share{service="engagement"} NaN' in metrics


async def test_leaderboard_by_period_and_region(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        old = await join(members, http, display_name="Old", region="moscow")
        recent = await join(members, http, display_name="Recent", region="kazan")
        mid = await join(members, http, display_name="Mid", region="moscow")
        now = datetime.now(UTC)
        for author, days_ago, count in ((old, 40, 3), (recent, 0, 2), (mid, 10, 1)):
            for _ in range(count):
                at = now - timedelta(days=days_ago)
                await publish(nc, PostCreated(post_id=str(uuid.uuid4()), author_id=author,
                                              kind="post", title="t", created_at=at))  # fmt: skip
        await wait_points(http, old, 16)
        await wait_points(http, recent, 11)
        await wait_points(http, mid, 6)

        async def board(query: str) -> list[tuple[str, float]]:
            r = await http.get(f"/v1/leaderboard?{query}")
            assert r.status_code == 200, r.text
            return [(row["display_name"], row["points"]) for row in r.json()["items"]]

        assert await board("period=all") == [("Old", 16), ("Recent", 11), ("Mid", 6)]
        assert await board("period=30d") == [("Recent", 11), ("Mid", 6), ("Old", 1)]
        assert (await board("period=7d"))[0] == ("Recent", 11)
        assert sorted(await board("period=7d")) == [("Mid", 1), ("Old", 1), ("Recent", 11)]
        assert await board("period=30d&region=moscow") == [("Mid", 6), ("Old", 1)]
        assert await board("period=all&limit=1") == [("Old", 16)]
        assert (await http.get("/v1/leaderboard?period=1y")).status_code == 422
        first = (await http.get("/v1/leaderboard?period=all")).json()["items"][0]
        assert (first["rank"], first["region"], first["level"]) == (1, "moscow", "participant")


async def test_segments_new_promising_loyal_and_drifting(services, nc):
    thresholds = {"participant": 2, "active": 10, "loyal": 20, "ambassador": 1000}
    async with services("members", "engagement", SARAFAN_ENGAGEMENT_LEVELS=thresholds) as s:
        members, http = s["members"].http, s["engagement"].http
        quiet = await join(members, http, display_name="Quiet")
        busy = await join(members, http, display_name="Busy")
        away = await join(members, http, display_name="Away")
        for _ in range(5):
            await post(http, busy)  # 26 points: loyal
        month_ago = datetime.now(UTC) - timedelta(days=15)
        for _ in range(5):
            await publish(nc, PostCreated(post_id=str(uuid.uuid4()), author_id=away, kind="post",
                                          title="t", created_at=month_ago))  # fmt: skip
        await wait_points(http, busy, 26)
        await wait_points(http, away, 26)

        async def segment(name: str) -> list[str]:
            r = await http.get(f"/v1/segments/{name}")
            assert r.status_code == 200, r.text
            return [row["display_name"] for row in r.json()["items"]]

        assert await segment("new-promising") == ["Busy", "Away", "Quiet"]
        assert await segment("loyal") == ["Busy"]  # Away: 26 × 2^-0.5 ≈ 18.4 → active
        assert await segment("drifting") == ["Away"]
        drifting = (await http.get("/v1/segments/drifting")).json()["items"][0]
        assert (drifting["level"], drifting["days_inactive"]) == ("active", 15)
        page = (await http.get("/v1/segments/new-promising?limit=2")).json()
        assert len(page["items"]) == 2 and page["next_cursor"] == "2"
        rest = (await http.get("/v1/segments/new-promising?cursor=2")).json()
        assert [r["display_name"] for r in rest["items"]] == ["Quiet"]
        assert (await http.get("/v1/segments/everyone")).status_code == 404
        stats = (await http.get("/v1/stats")).json()
        assert (stats["loyal_pool"], stats["drifting"]) == (1, 1)
        assert (await engagement_of(http, quiet))["level"] == "newcomer"
