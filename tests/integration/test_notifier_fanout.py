"""A campaign for 2,000 members: fan-out in batches, each delivery sent and recorded on its own."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import CampaignStarted, MemberJoined, new_event
from tests.helpers import wait_until
from tests.integration.notifier_peers import (
    WEBHOOK_SECRET,
    WebhookReceiver,
    create_streams,
    publish,
    serve,
)

log = logging.getLogger("tests.fanout")
AUDIENCE = 2000


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    async with serve(receiver) as url:
        receiver.url = url + "/hooks"
        yield receiver


def member(n: int, region: str = "moscow", marketing: bool = True) -> MemberJoined:
    return MemberJoined(
        member_id=f"m{n:05d}-{uuid.uuid4().hex[:6]}",
        display_name=f"Участник {n}",
        region=region,
        roles=["volunteer"],
        locale="ru" if n % 2 else "en",
        timezone="Europe/Moscow",
        contacts={"phone": f"+7999{n:07d}"},
        consent={"terms": True, "marketing": marketing},
        joined_at=datetime.now(UTC),
    )


@pytest.mark.timeout(120)
async def test_campaign_for_2000_members_reaches_exactly_its_audience_once(
    services: Any,
    nc: Any,
    webhook: WebhookReceiver,
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    outside = [member(AUDIENCE + n, region="kazan") for n in range(50)]
    outside += [member(AUDIENCE + 50 + n, marketing=False) for n in range(50)]
    inside = [member(n) for n in range(AUDIENCE)]
    joins = inside + outside
    js = nc.jetstream()

    async def announced(count: int) -> bool:
        return (await js.stream_info("NOTIFIER")).state.messages == count

    # The community joins while only the in-app channel is on (each join is welcomed in the
    # inbox, in bulk); then the operator turns the webhook on and restarts the notifier.
    async with services("notifier"):
        for chunk in range(0, len(joins), 100):  # as a busy members service would publish
            await asyncio.gather(*(publish(nc, j) for j in joins[chunk : chunk + 100]))
        await wait_until(
            lambda: announced(len(joins)),
            timeout=60,
            interval=0.25,
            message="a welcome for every member",
        )

    async with services(
        "notifier",
        WEBHOOK_URL=webhook.url,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        SARAFAN_NOTIFIER_POLL_SECONDS=0.1,
    ) as s:
        store = s["notifier"].store

        # Polls read through indexed finds: nx-27017 runs one operation at a time and a
        # count_documents scans, which would slow down the very service under test.
        def campaign_posts() -> list[dict[str, Any]]:
            return [
                r
                for r in webhook.delivered()
                if r["payload"]["type"] == "notification.campaign_announcement"
            ]

        now = datetime.now(UTC)
        campaign = CampaignStarted(
            campaign_id="c_big",
            name="Большая уборка",
            kind="challenge",
            audience={"regions": ["moscow"], "roles": ["volunteer"]},
            starts_at=now,
            ends_at=now + timedelta(days=7),
            announcement={"ru": "Все на уборку!", "en": "Everyone to the clean-up!"},
        )
        event = new_event(campaign)

        async def deliveries(channel: str) -> list[dict[str, Any]]:
            return await store.deliveries.find(
                {"cause_event_id": event.id, "channel": channel}, {"status": 1}
            ).to_list(None)

        started = time.perf_counter()
        await publish(nc, campaign, event=event)

        async def written() -> bool:
            return len(await deliveries("webhook")) == AUDIENCE

        await wait_until(written, timeout=30, interval=0.5, message="fan-out")
        fanned_out = time.perf_counter() - started
        await wait_until(
            lambda: len(campaign_posts()) == AUDIENCE,
            timeout=60,
            interval=0.25,
            message="every webhook delivery",
        )
        delivered = time.perf_counter() - started
        log.warning(
            "campaign for %d: fan-out %.2fs, all pushed %.2fs", AUDIENCE, fanned_out, delivered
        )

        posts = campaign_posts()
        assert len({r["id"] for r in posts}) == AUDIENCE
        assert {r["payload"]["data"]["member_id"] for r in posts} == {m.member_id for m in inside}
        assert len(await deliveries("inapp")) == AUDIENCE

        async def all_recorded() -> bool:
            return all(d["status"] == "delivered" for d in await deliveries("webhook"))

        await wait_until(all_recorded, interval=0.25, message="every delivery recorded")

        # Handled again (a redelivery after a crash mid-fan-out): nothing new, nothing resent.
        [consumer] = [
            c for c in s["notifier"].runtime.bus.consumers if c.name == "notifier-campaigns"
        ]
        await consumer.handle(event, campaign)
        await s["notifier"].jobs.dispatcher.run_once()
        assert len(await deliveries("webhook")) == len(await deliveries("inapp")) == AUDIENCE
        assert len(campaign_posts()) == AUDIENCE

        await wait_until(
            lambda: announced(len(joins) + 2 * AUDIENCE),
            timeout=60,
            interval=0.25,
            message="notification-sent for every delivery",
        )
