"""A campaign starts and ends by itself, exactly once, with two replicas on one database."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import timedelta

from services.campaigns.app import CampaignsSettings, compose
from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.conftest import run_service
from tests.integration.test_campaigns_support import Collector, campaign_body, declare_streams


async def two_replicas(
    stack: AsyncExitStack, nats_url: str, mongo_url: str, database: str, **settings
):
    return [
        await stack.enter_async_context(
            run_service(
                compose,
                CampaignsSettings,
                nats_url=nats_url,
                mongo_url=mongo_url,
                database=database,
                **settings,
            )
        )
        for _ in range(2)
    ]


async def stored_events(nc, subject: str) -> int:
    info = await nc.jetstream().stream_info("CAMPAIGNS", subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_two_replicas_start_and_end_a_campaign_by_itself_exactly_once(
    nc, nats_test_url, mongo_url, db_prefix
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with AsyncExitStack() as stack:
        a, b = await two_replicas(
            stack,
            nats_test_url,
            mongo_url,
            f"{db_prefix}_campaigns",
            SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=0.2,
            SARAFAN_CAMPAIGNS_END_GRACE_SECONDS=0,
        )
        # A quarter past the next second, so neither starts_at nor ends_at falls on a whole
        # second: one is written without a fraction ("…10Z"), which sorts after "…10.2Z".
        now = utcnow().replace(microsecond=250_000) + timedelta(seconds=1)
        r = await a.http.post(
            "/v1/campaigns",
            json=campaign_body(
                starts_at=(now + timedelta(seconds=1)).isoformat(),
                ends_at=(now + timedelta(seconds=2.5)).isoformat(),
            ),
        )
        assert r.status_code == 201, r.text
        cid = r.json()["campaign_id"]
        assert r.json()["status"] == "scheduled"

        async def status(replica) -> str:
            return (await replica.http.get(f"/v1/campaigns/{cid}")).json()["status"]

        await wait_until(
            lambda: len(seen.of_type("campaign-started")) >= 1, timeout=10, message="never started"
        )
        assert await status(b) in ("active", "ended")
        await wait_until(
            lambda: len(seen.of_type("campaign-ended")) >= 1, timeout=10, message="never ended"
        )
        campaign = (await b.http.get(f"/v1/campaigns/{cid}")).json()
        assert campaign["status"] == "ended"
        assert campaign["started_at"] >= campaign["starts_at"]
        assert campaign["ended_at"] >= campaign["ends_at"]

        # More ticks on both replicas, and both tick at once past the lease: nothing more.
        for _ in range(3):
            await asyncio.gather(a.jobs.tick(), b.jobs.tick())

        async def flushed() -> bool:
            pending = await a.store.campaigns.count_documents({"outbox_pending": {"$gt": 0}})
            return pending == 0

        await wait_until(flushed, message="outbox never flushed")
        assert await stored_events(nc, f"campaigns.campaign-started.{cid}") == 1
        assert await stored_events(nc, f"campaigns.campaign-ended.{cid}") == 1
        assert len(seen.of_type("campaign-started")) == 1
        assert len(seen.of_type("campaign-ended")) == 1
        started = seen.of_type("campaign-started")[0]["data"]
        assert started["announcement"] == {"ru": "Приведи друга!", "en": "Bring a friend!"}
        assert started["audience"]["regions"] == ["moscow"]


async def test_racing_start_and_end_requests_on_two_replicas_succeed_once(
    nc, nats_test_url, mongo_url, db_prefix
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with AsyncExitStack() as stack:
        a, b = await two_replicas(
            stack,
            nats_test_url,
            mongo_url,
            f"{db_prefix}_campaigns",
            SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=60,
        )
        cid = (await a.http.post("/v1/campaigns", json=campaign_body())).json()["campaign_id"]
        for action, status in (("start", "active"), ("end", "ended")):
            replies = await asyncio.gather(
                *[replica.http.post(f"/v1/campaigns/{cid}/{action}") for replica in (a, b, a, b)]
            )
            codes = sorted(r.status_code for r in replies)
            assert codes == [200, 409, 409, 409], [r.text for r in replies]
            winner = next(r for r in replies if r.status_code == 200)
            assert winner.json()["status"] == status

        async def flushed() -> bool:
            return await a.store.campaigns.count_documents({"outbox_pending": {"$gt": 0}}) == 0

        await wait_until(flushed, message="outbox never flushed")
        assert await stored_events(nc, "campaigns.campaign-started.>") == 1
        assert await stored_events(nc, "campaigns.campaign-ended.>") == 1
