"""A fan-out that grows with its audience: writes per batch, not per member; each delivery's
notification-sent published once across a crash mid-fan-out; pushes claimed in batches by two
dispatchers, each sent once; sends paced by the channel, not the database."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from shared.events import CampaignStarted
from shared.outbox_batch import BATCHES
from tests.command_counts import WriteCounter
from tests.helpers import StoppedRelay, wait_until
from tests.integration.conftest import run_service
from tests.integration.notifier_peers import (
    BOT_TOKEN,
    WEBHOOK_SECRET,
    FakeTelegram,
    WebhookReceiver,
    create_streams,
    publish,
    serve,
)
from tests.integration.test_delivery_guarantees import stream_messages


def projected(n: int, **contacts: str) -> dict[str, Any]:
    """A member as the notifier's projection holds her after member-joined."""
    return {
        "_id": f"m{n:05d}-{uuid.uuid4().hex[:6]}",
        "display_name": f"Участник {n}",
        "region": "moscow",
        "roles": ["volunteer"],
        "locale": "ru" if n % 2 else "en",
        "timezone": "Europe/Moscow",
        "contacts": {"phone": f"+7999{n:07d}", **contacts},
        "consent": {"terms": True, "marketing": True},
        "status": "active",
        "coordinator_region": "",
    }


def campaign() -> CampaignStarted:
    now = datetime.now(UTC)
    return CampaignStarted(
        campaign_id=f"c_{uuid.uuid4().hex[:6]}",
        name="Большая уборка",
        kind="challenge",
        audience={"regions": ["moscow"], "roles": ["volunteer"]},
        starts_at=now,
        ends_at=now + timedelta(days=7),
        announcement={"ru": "Все на уборку!", "en": "Everyone to the clean-up!"},
    )


async def announced(js: Any, cause_id: str) -> list[str]:
    """The notification ids of the notification-sent events of one cause in the stream (each
    message once: a duplicate shows twice)."""
    msgs = await stream_messages(js, "NOTIFIER", "notifier.notification-sent.>")
    bodies = [json.loads(m.data)["data"] for m in msgs]
    return [b["notification_id"] for b in bodies if b["cause_event_id"] == cause_id]


async def inapp_ids(db: Any, cause_id: str) -> list[str]:
    """The in-app deliveries of a cause, in the notifier's database."""
    found = db["deliveries"].find(
        {"cause_event_id": {"$eq": cause_id}, "channel": {"$eq": "inapp"}}, {"_id": 1}
    )
    return [d["_id"] for d in await found.to_list(None)]


async def test_a_2000_member_fan_out_writes_per_batch_not_per_member(
    services: Any, nc: Any, db_prefix: str
) -> None:
    await create_streams(nc, "CAMPAIGNS")
    counter = WriteCounter.start(f"{db_prefix}_notifier")  # the service's client reports to it
    try:
        async with services("notifier", SARAFAN_NOTIFIER_FANOUT_BATCH=500) as s:
            store = s["notifier"].store
            await store.members.insert_many([projected(n) for n in range(2000)])
            counter.on = True
            event = await publish(nc, campaign())

            async def all_announced() -> bool:
                return len(await announced(nc.jetstream(), event.id)) >= 2000

            await wait_until(all_announced, timeout=90, interval=0.5, message="fan-out")
            await wait_until(lambda: _none(store.deliveries.database[BATCHES]), timeout=20)
            counter.on = False
            ids = await inapp_ids(store.deliveries.database, event.id)
    finally:
        counter.on = False
    assert sorted(await announced(nc.jetstream(), event.id)) == sorted(ids)
    assert len(ids) == 2000
    # Four batches of 500: nothing written per delivery after its insert (no mark, no claim:
    # in-app only), one delete per batch; the deliveries in one insert per batch.
    assert counter.changed() <= 4 * 2 + 5, dict(counter.documents)
    assert counter.written("update", "deliveries") == 0
    assert counter.written("delete", BATCHES) == 4
    assert counter.written("insert", "deliveries") == 2000
    assert counter.round_trips[("insert", "deliveries")] <= 4


async def _none(coll: Any) -> bool:
    return await coll.find_one({}) is None


async def test_a_fan_out_whose_process_died_midway_announces_each_delivery_once_after_restart(
    services: Any, nc: Any, mongo_url: str, db_prefix: str
) -> None:
    await create_streams(nc, "CAMPAIGNS")
    settings = {"SARAFAN_NOTIFIER_FANOUT_BATCH": 250, "SARAFAN_ACK_WAIT_SECONDS": 2}
    async with services("notifier", **settings) as s:
        store, fanout = s["notifier"].store, s["notifier"].app.state.context.use_cases.fanout
        await store.members.insert_many([projected(n) for n in range(1000)])
        # The process writes two batches, publishes nothing, and dies in the third.
        StoppedRelay(s["notifier"].runtime.relay)
        written, deliver = 0, fanout.deliver

        async def dying(items: Any) -> Any:
            nonlocal written
            if written == 2:
                await asyncio.Event().wait()  # hangs until the process goes
            written += 1
            return await deliver(items)

        fanout.deliver = dying
        event = await publish(nc, campaign())
        await wait_until(
            lambda: _count(inapp_ids(store.deliveries.database, event.id), 500),
            timeout=30,
            message="two batches",
        )
    assert await announced(nc.jetstream(), event.id) == []
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    try:
        db = client[f"{db_prefix}_notifier"]
        assert len(await inapp_ids(db, event.id)) == 500  # and two batches wait in their lease
        assert len(await db[BATCHES].find({}, {"_id": 1}).to_list(None)) == 2
    finally:
        await client.close()
    async with services("notifier", **settings) as s:
        store = s["notifier"].store
        # campaign-started, never acknowledged, comes back: the other 500 are written, the
        # first 500 found written; the dead process's batches wait for their lease: 30 s on.
        await wait_until(
            lambda: _count(inapp_ids(store.deliveries.database, event.id), 1000),
            timeout=60,
            message="redelivery",
        )
        await store.deliveries.database[BATCHES].update_many({}, {"$set": {"lease_until_ms": 0}})

        async def all_announced() -> bool:
            return len(await announced(nc.jetstream(), event.id)) >= 1000

        await wait_until(all_announced, timeout=60, interval=0.5, message="announced")
        ids = await inapp_ids(store.deliveries.database, event.id)
    sent = await announced(nc.jetstream(), event.id)
    assert len(sent) == len(set(sent)) == 1000
    assert set(sent) == set(ids)


async def _count(ids: Any, n: int) -> bool:
    return len(await ids) >= n


async def test_two_dispatchers_claiming_in_batches_send_each_delivery_once(
    services: Any, nc: Any, nats_test_url: str, mongo_url: str, db_prefix: str
) -> None:
    await create_streams(nc, "CAMPAIGNS")
    receiver = WebhookReceiver()
    async with serve(receiver) as url:
        settings = {
            "WEBHOOK_URL": url + "/hooks",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SARAFAN_NOTIFIER_CLAIM_BATCH": 40,
            "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1,
        }
        async with services("notifier", **settings) as s:
            from services.notifier.app import NotifierSettings, compose

            # A second replica over the same database: its own dispatcher, its own claims.
            async with run_service(
                compose,
                NotifierSettings,
                nats_url=nats_test_url,
                mongo_url=mongo_url,
                database=f"{db_prefix}_notifier",
                **settings,
            ):
                store = s["notifier"].store
                await store.members.insert_many([projected(n) for n in range(400)])
                event = await publish(nc, campaign())
                await wait_until(
                    lambda: len(receiver.delivered()) >= 400,
                    timeout=90,
                    interval=0.25,
                    message="every webhook",
                )
                sending = {"cause_event_id": {"$eq": event.id}, "channel": {"$eq": "webhook"}}

                async def recorded() -> bool:
                    docs = await store.deliveries.find(sending, {"status": 1}).to_list(None)
                    return len(docs) == 400 and all(d["status"] == "delivered" for d in docs)

                await wait_until(recorded, timeout=30, message="every outcome recorded")
    ids = [r["id"] for r in receiver.delivered()]
    assert len(ids) == len(set(ids)) == 400


async def test_telegram_sends_are_paced_by_the_channel_rate(services: Any, nc: Any) -> None:
    await create_streams(nc, "CAMPAIGNS")
    telegram = FakeTelegram()
    async with serve(telegram) as url:
        async with services(
            "notifier",
            TELEGRAM_API_URL=url,
            TELEGRAM_BOT_TOKEN=BOT_TOKEN,
            SARAFAN_NOTIFIER_TELEGRAM_RATE=10,
            SARAFAN_NOTIFIER_POLL_SECONDS=0.1,
        ) as s:
            members = [projected(n, telegram=str(700000 + n)) for n in range(21)]
            await s["notifier"].store.members.insert_many(members)
            await publish(nc, campaign())
            await wait_until(
                lambda: len([c for c in telegram.calls if c["status"] == 200]) >= 21,
                timeout=30,
                message="every telegram message",
            )
    starts = sorted(c["at"] for c in telegram.calls)
    # Ten a second: 21 sends span at least two seconds, however fast the database answers.
    assert starts[-1] - starts[0] >= 2.0 - 0.05
