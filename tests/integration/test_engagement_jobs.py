"""Periodic jobs: member-drifting once per drift episode, question-unanswered once per question,
decay-driven demotion — each exactly once with two replicas of the service on one database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from services.engagement.app import EngagementSettings, compose
from shared.events import PostCreated
from shared.store import epoch_ms
from tests.helpers import wait_until
from tests.integration.conftest import Running, run_service
from tests.integration.test_engagement_support import collect, engagement_of, join, publish

FAST = {"SARAFAN_ENGAGEMENT_JOB_SECONDS": 0.2, "SARAFAN_ENGAGEMENT_GAUGES_SECONDS": 0.5}


@asynccontextmanager
async def second_replica(
    nats_url: str, mongo_url: str, db_prefix: str, **overrides: object
) -> AsyncIterator[Running]:
    """Another engagement process on the same database and the same durable consumers."""
    async with run_service(
        compose, EngagementSettings, nats_url=nats_url, mongo_url=mongo_url,
        database=f"{db_prefix}_engagement", **{**FAST, **overrides},
    ) as running:  # fmt: skip
        yield running


async def facts_settled(nc) -> None:
    """Every post published so far is handled: a member can turn active before the last of
    their posts is scored, and a scan racing that write finds the standing changed under it."""

    async def settled() -> bool:
        info = await nc.jetstream().consumer_info("ENGAGEMENT", "engagement-activity")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(settled, message="the posts were never all handled")


async def posts_at(nc, member: str, at: datetime, count: int) -> None:
    for _ in range(count):
        await publish(nc, PostCreated(post_id=str(uuid.uuid4()), author_id=member, kind="post",
                                      title="t", created_at=at))  # fmt: skip


async def test_two_replicas_emit_member_drifting_once_per_drift_episode(
    services, nc, nats_test_url, mongo_url, db_prefix
):
    async with (
        collect(nc, "engagement.member-drifting.>") as drifting,
        services("members", "engagement", **FAST) as s,
        second_replica(nats_test_url, mongo_url, db_prefix) as b,
    ):
        members, http = s["members"].http, s["engagement"].http
        member = await join(members, http, display_name="Drifter")
        last_seen = datetime.now(UTC) - timedelta(days=20)
        await posts_at(nc, member, last_seen, 10)  # 50 points, 20 days old: ~31.5 now → active

        async def active() -> bool:
            return (await engagement_of(http, member))["level"] == "active"

        await wait_until(active, message="the member never became active")
        await facts_settled(nc)
        # The periodic jobs of both replicas notice the drift: one event between them.
        await wait_until(lambda: drifting, message="no member-drifting from the periodic job")
        await asyncio.sleep(1.0)  # five more job intervals on each replica
        assert len(drifting) == 1
        event = drifting[0]
        assert event["subject"] == member
        assert event["data"]["level"] == "active" and event["data"]["days_inactive"] == 20
        segment = (await http.get("/v1/segments/drifting")).json()["items"]
        assert [row["member_id"] for row in segment] == [member]

        # Both replicas scanning at the same moment: nothing new, it is the same episode.
        jobs_a, jobs_b = s["engagement"].jobs, b.jobs
        now = datetime.now(UTC)
        assert await asyncio.gather(jobs_a.scan_drifting(now), jobs_b.scan_drifting(now)) == [0, 0]

        # The member comes back: counted once as a return, and out of the segment.
        r = await http.post("/v1/posts", json={"author_id": member, "title": "I'm back"})
        assert r.status_code == 201

        async def returned() -> bool:
            return (await http.get("/v1/stats")).json()["returned_after_drift_30d"] == 1

        await wait_until(returned, message="the return after drifting was not counted")
        assert (await http.get("/v1/segments/drifting")).json()["items"] == []

        # Silent again for 15 days: a new episode, again emitted once by the two replicas.
        later = datetime.now(UTC) + timedelta(days=15)
        emitted = await asyncio.gather(jobs_a.scan_drifting(later), jobs_b.scan_drifting(later))
        assert sorted(emitted) == [0, 1]
        await wait_until(lambda: len(drifting) == 2)
        assert drifting[1]["data"]["days_inactive"] == 15
        assert drifting[1]["id"] != drifting[0]["id"]


async def test_question_unanswered_is_emitted_once_per_question(
    services, nc, nats_test_url, mongo_url, db_prefix
):
    async with (
        collect(nc, "engagement.question-unanswered.>") as unanswered,
        services("members", "engagement") as s,
        second_replica(nats_test_url, mongo_url, db_prefix) as b,
    ):
        members, http = s["members"].http, s["engagement"].http
        asker = await join(members, http, region="tver")
        helper = await join(members, http)

        async def ask(title: str) -> str:
            body = {"author_id": asker, "kind": "question", "title": title}
            return str((await http.post("/v1/posts", json=body)).json()["post_id"])

        lonely, answered, self_answered = await ask("a"), await ask("b"), await ask("c")
        await http.post(f"/v1/posts/{answered}/comments", json={"author_id": helper, "body": "x"})
        await http.post(
            f"/v1/posts/{self_answered}/comments", json={"author_id": asker, "body": "y"}
        )
        await http.post("/v1/posts", json={"author_id": asker, "kind": "story", "title": "d"})

        jobs_a, jobs_b = s["engagement"].jobs, b.jobs
        soon = datetime.now(UTC) + timedelta(hours=23)
        assert await asyncio.gather(jobs_a.scan_unanswered(soon), jobs_b.scan_unanswered(soon)) == [
            0, 0,
        ]  # fmt: skip
        later = datetime.now(UTC) + timedelta(hours=25)
        emitted = await asyncio.gather(jobs_a.scan_unanswered(later), jobs_b.scan_unanswered(later))
        assert sum(emitted) == 2
        assert await jobs_a.scan_unanswered(later + timedelta(hours=1)) == 0

        await wait_until(lambda: len(unanswered) == 2)
        await asyncio.sleep(0.3)
        assert sorted(e["subject"] for e in unanswered) == sorted([lonely, self_answered])
        described = {(e["data"]["asker_id"], e["data"]["region"]) for e in unanswered}
        assert described == {(asker, "tver")}
        assert {e["data"]["hours_open"] for e in unanswered} == {25}


async def test_the_periodic_job_reports_an_unanswered_question_by_itself(services, nc):
    settings = {**FAST, "SARAFAN_ENGAGEMENT_UNANSWERED_HOURS": 0.0005}  # 1.8 seconds
    async with (
        collect(nc, "engagement.question-unanswered.>") as unanswered,
        services("members", "engagement", **settings) as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        asker = await join(members, http)
        body = {"author_id": asker, "kind": "question", "title": "anyone?"}
        pid = (await http.post("/v1/posts", json=body)).json()["post_id"]
        await wait_until(lambda: unanswered, timeout=10)
        assert unanswered[0]["subject"] == pid


async def test_decay_alone_demotes_with_level_changed_after_the_drift_is_reported(services, nc):
    async with (
        collect(nc, "engagement.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        member = await join(members, http)
        await posts_at(nc, member, datetime.now(UTC), 5)  # 26 points: active

        async def active() -> bool:
            return (await engagement_of(http, member))["level"] == "active"

        await wait_until(active)
        await facts_settled(nc)
        jobs = s["engagement"].jobs
        await jobs.scan_drifting(datetime.now(UTC) + timedelta(days=60))  # 26 / 4 = 6.5

        def levels() -> list[tuple[str, str]]:
            return [
                (e["data"]["old_level"], e["data"]["new_level"])
                for e in seen
                if e["type"] == "level-changed"
            ]

        await wait_until(lambda: levels()[-1:] == [("active", "participant")])
        kinds = [e["type"] for e in seen if e["type"] in ("member-drifting", "level-changed")]
        assert kinds[-2:] == ["member-drifting", "level-changed"]
        assert (await engagement_of(http, member))["level"] == "participant"


async def test_with_several_members_drifting_one_coming_back_is_counted_once(services, nc):
    async with (
        collect(nc, "engagement.member-drifting.>") as drifting,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        jobs = s["engagement"].jobs
        drifters = [await join(members, http) for _ in range(4)]
        last_seen = datetime.now(UTC) - timedelta(days=20)
        for member in drifters:
            await posts_at(nc, member, last_seen, 10)  # ~31.5 points now: active

        async def all_active() -> bool:
            levels = {(await engagement_of(http, m))["level"] for m in drifters}
            return levels == {"active"}

        await wait_until(all_active, timeout=15, message="the members never became active")
        await facts_settled(nc)
        now = datetime.now(UTC)
        assert await jobs.scan_drifting(now) == 4
        assert await jobs.scan_drifting(now) == 0  # the same episodes: nothing new
        await wait_until(lambda: len(drifting) == 4, message="not every member drifted")
        # Each episode marked on its own member's standing, and reported for that member.
        assert sorted(e["subject"] for e in drifting) == sorted(drifters)
        store = s["engagement"].store
        for member in drifters:
            standing = await store.standing.find_one({"_id": member})
            assert standing["drift_from_ms"] == epoch_ms(last_seen), member

        back = drifters[2]
        r = await http.post("/v1/posts", json={"author_id": back, "title": "I'm back"})
        assert r.status_code == 201

        async def returned() -> int:
            return int((await http.get("/v1/stats")).json()["returned_after_drift_30d"])

        assert await wait_until(returned, message="the return was never counted") == 1
        assert await jobs.scan_drifting(datetime.now(UTC)) == 0
        assert await returned() == 1
        segment = (await http.get("/v1/segments/drifting")).json()["items"]
        assert sorted(row["member_id"] for row in segment) == sorted(set(drifters) - {back})
        # Published once per member: the stream holds one member-drifting per subject.
        info = await nc.jetstream().stream_info(
            "ENGAGEMENT", subjects_filter="engagement.member-drifting.*"
        )
        assert info.state.subjects == {f"engagement.member-drifting.{m}": 1 for m in drifters}
        assert len(drifting) == 4
