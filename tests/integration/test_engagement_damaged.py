"""One damaged stored document (written by an older version, edited by hand) never takes a list
or a periodic job down: it is logged by id and left out, and everything else is answered."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from services.engagement.standings import cohort
from shared.events import PostCreated
from shared.query import order_key
from shared.store import epoch_ms
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    collect,
    engagement_of,
    join,
    publish,
    wait_points,
)


async def test_lists_leave_out_a_damaged_document_and_answer_the_rest(services, caplog):
    async with services("members", "engagement") as s:
        members, http, store = s["members"].http, s["engagement"].http, s["engagement"].store
        author = await join(members, http, display_name="Author")
        helper = await join(members, http, display_name="Helper")
        pid = (await http.post("/v1/posts", json={"author_id": author, "title": "t"})).json()[
            "post_id"
        ]
        comment = await http.post(
            f"/v1/posts/{pid}/comments", json={"author_id": helper, "body": "ok"}
        )
        hours = {"member_id": author, "hours": 1, "activity": "x", "date": "2026-11-01"}
        entry = (await http.post("/v1/hours", json=hours)).json()["entry_id"]

        async def both_ranked() -> bool:
            rows = (await http.get("/v1/leaderboard", params={"period": "all"})).json()["items"]
            return len(rows) == 2

        await wait_until(both_ranked, message="the two members were never ranked")
        now_ms = epoch_ms(datetime.now(UTC))
        # Each damaged where its list reads it, and sorting first in it.
        await store.comments.insert_one(
            {"_id": "broken-comment", "post_id": pid, "created_ms": "yesterday",
             "order_key": order_key(0, "broken-comment")}
        )  # fmt: skip
        await store.hours.insert_one(
            {"_id": "broken-hours", "member_id": author, "status": "pending", "hours": 1,
             "activity": "x", "date": "not a date", "created_ms": now_ms + 1,
             "order_key": order_key(now_ms + 10_000, "broken-hours")}
        )  # fmt: skip
        await store.standing.insert_many(
            [
                # Top of every leaderboard ("0:" sorts before every rank key), unreadable.
                {"_id": "broken-points", "rank_all": "0:a", "points_total": "lots",
                 "rank30": "0:a", "p30": "x", "w30_until_ms": "soon", "days": "garbage"},
                {"_id": "broken-level", "rank_all": "0:b", "points_total": 99, "level": {"x": 1}},
                # Loyal and new, with the best scores of their segments, and no readable record.
                {"_id": "broken-loyal", "level": "loyal", "active": 1, "lscore": 1e6,
                 "days": "garbage"},
                {"_id": "broken-new", "cohort": cohort(now_ms), "joined_ms": now_ms, "active": 1,
                 "lscore": "high", "days": "garbage"},
            ]
        )  # fmt: skip
        await store.standing.insert_one(
            {"_id": "readable-loyal", "level": "loyal", "active": 1, "lscore": 1.0}
        )

        caplog.set_level(logging.WARNING, logger="sarafan.engagement")
        r = await http.get(f"/v1/posts/{pid}/comments")
        assert r.status_code == 200, r.text
        assert [c["comment_id"] for c in r.json()["items"]] == [comment.json()["comment_id"]]

        r = await http.get(f"/v1/members/{author}/hours")
        assert r.status_code == 200, r.text
        assert [i["entry_id"] for i in r.json()["items"]] == [entry]

        for period in ("all", "30d", "7d"):
            r = await http.get("/v1/leaderboard", params={"period": period})
            assert r.status_code == 200, r.text
            rows = r.json()["items"]
            assert {row["member_id"] for row in rows} == {author, helper}, period
            assert [row["rank"] for row in rows] == [1, 2]  # no gap where a row was left out

        r = await http.get("/v1/segments/loyal")
        assert r.status_code == 200, r.text
        assert [row["member_id"] for row in r.json()["items"]] == ["readable-loyal"]
        r = await http.get("/v1/segments/new-promising")
        assert r.status_code == 200, r.text
        assert "broken-new" not in [row["member_id"] for row in r.json()["items"]]
        assert {author, helper} <= {row["member_id"] for row in r.json()["items"]}

        logged = caplog.text
        for ident in ("broken-comment", "broken-hours", "broken-level", "broken-loyal"):
            assert ident in logged, ident
        assert "yesterday" not in logged and "garbage" not in logged  # ids, never contents


async def test_a_damaged_standing_or_question_does_not_stop_the_periodic_jobs(services, nc):
    async with (
        collect(nc, "engagement.member-drifting.>") as drifting,
        collect(nc, "engagement.question-unanswered.>") as unanswered,
        services("members", "engagement") as s,
    ):
        members, http, store = s["members"].http, s["engagement"].http, s["engagement"].store
        jobs = s["engagement"].jobs
        first = await join(members, http)
        second = await join(members, http)
        seen = datetime.now(UTC) - timedelta(days=20)
        for member in (first, second):
            for _ in range(10):  # 50 points 20 days ago: ~31.5 now, active
                await publish(nc, PostCreated(post_id=str(uuid.uuid4()), author_id=member,
                                              kind="post", title="t", created_at=seen))  # fmt: skip

        async def both_active() -> bool:
            levels = [(await engagement_of(http, m))["level"] for m in (first, second)]
            return levels == ["active", "active"]

        await wait_until(both_active, timeout=15, message="the members never became active")
        # Every post scored (active comes after a few): a standing still being written when
        # the scan runs loses its version guard and is flagged at the next scan, not this one.
        for member in (first, second):
            await wait_points(http, member, 50)
        old = epoch_ms(seen)
        await store.standing.insert_many(
            [
                # Due for the drift scan first, with an activity time that is not a number.
                {"_id": "broken-drift", "level": "active", "last_ms": "last week",
                 "drift_due_ms": 0},
                # Due for settling first, with a record that cannot be read.
                {"_id": "broken-due", "level": "active", "due_ms": 0, "days": "garbage"},
            ]
        )  # fmt: skip
        now = datetime.now(UTC)
        assert await jobs.scan_drifting(now) == 2
        await wait_until(lambda: len(drifting) == 2, message="the others never drifted")
        assert sorted(e["subject"] for e in drifting) == sorted([first, second])
        # The damaged ones are set aside, not retried on every run (nor looped on).
        for ident, due in (("broken-drift", "drift_due_ms"), ("broken-due", "due_ms")):
            doc = await store.standing.find_one({"_id": ident})
            assert doc[due] > epoch_ms(now), ident

        # A question the job cannot describe (its asker is not an id) beside one it can.
        question = {"author_id": second, "kind": "question", "title": "anyone?"}
        asked = (await http.post("/v1/posts", json=question)).json()["post_id"]
        await store.posts.insert_one(
            {"_id": "broken-question", "kind": "question", "open": 1, "created_ms": old,
             "author_id": 12345, "title": "", "body": "", "tags": []}
        )  # fmt: skip
        assert await jobs.scan_unanswered(now + timedelta(hours=25)) == 1
        await wait_until(lambda: unanswered, message="the good question was never reported")
        assert [e["subject"] for e in unanswered] == [asked]

        # Decay settles everyone else although a damaged standing is due before them.
        await store.standing.update_one({"_id": "broken-due"}, {"$set": {"due_ms": 0}})
        await jobs.settle_due(now + timedelta(days=60))
        for member in (first, second):
            assert (await engagement_of(http, member))["level"] == "participant"
