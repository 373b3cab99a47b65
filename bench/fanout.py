"""Notifier fan-out: one campaign-started for N members (10,000 by default, up to 100,000), beside
a raw insert_many of the same number of documents on the same servers in the same run.

The notifier runs in-process as `build()` wires it, on the embedded nats-server and nx-27017
started for the run. Its projection is seeded with N members (all in the audience, with
marketing consent); the clock starts when campaign-started is published and the fan-out figure
stops when the consumer has acknowledged it, that is when every delivery is written (planned,
budgets spent, inserted in batches). Two runs: in-app only (N deliveries), and in-app plus a
webhook channel (2N deliveries; the pushes go to a local receiver, timed to the last one).
The raw figure is one `insert_many(ordered=False)` of as many documents of the same shape, once
before the fan-out and once after (the mean is the baseline: a shared machine's load drifts);
the ratio is fan-out / raw. `--no-webhook` runs the in-app case alone (pushing 100,000 webhooks to a
receiver in the same process takes many minutes and measures the receiver as much).
Run: .venv/bin/python -m bench.fanout [--members 10000] [--no-webhook]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import uvicorn
from nats.js.api import StorageType, StreamConfig
from pymongo import AsyncMongoClient

from bench.stack import TOKEN, embedded_servers, emit, machine, write_section
from sarafan.embedded import LOCALHOST, free_port
from services.notifier import deliveries, rules
from services.notifier.app import NotifierSettings, compose
from services.notifier.domain import Recipient
from shared.bus import DUPLICATE_WINDOW
from shared.events import CampaignStarted, CloudEvent, new_event

TITLE = "Notifier: fan-out of one campaign to {n:,} members"


class Receiver:
    """A webhook endpoint that answers 204 and counts."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.count += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def member_docs(count: int) -> list[dict[str, Any]]:
    """Members as the notifier's projection holds them after member-joined."""
    return [
        {"_id": f"m{n:06d}-{uuid.uuid4().hex[:8]}", "display_name": f"Участник {n}",
         "region": "moscow", "roles": ["volunteer"], "locale": "ru" if n % 2 else "en",
         "timezone": "Europe/Moscow", "contacts": {"phone": f"+7999{n:07d}"},
         "consent": {"terms": True, "marketing": True}, "status": "active"}
        for n in range(count)
    ]  # fmt: skip


async def fan_out(
    nats_url: str, mongo_url: str, count: int, webhook: str | None, receiver: Receiver
) -> dict[str, Any]:
    database = f"bench_fanout_{uuid.uuid4().hex[:6]}"
    extra = {"WEBHOOK_URL": webhook, "WEBHOOK_SECRET": "whsec_YmVuY2g="} if webhook else {}
    settings = NotifierSettings(NATS_URL=nats_url, MONGODB_URL=mongo_url,
                                SARAFAN_MONGODB_DATABASE=database, SARAFAN_API_TOKEN=TOKEN,
                                SARAFAN_NOTIFIER_POLL_SECONDS=0.1, **extra)  # fmt: skip
    parts = compose(settings)
    app, store = parts.app, parts.store
    runtime = app.state.runtime
    await store.members.insert_many(member_docs(count), ordered=False)
    consumed = runtime.metrics.events_consumed.labels("notifier", "campaign-started", "ok")
    now = datetime.now(UTC)
    campaign = new_event(CampaignStarted(
        campaign_id=f"c_{uuid.uuid4().hex[:6]}", name="Большая уборка", kind="challenge",
        audience={"regions": ["moscow"], "roles": ["volunteer"]}, starts_at=now,
        ends_at=now + timedelta(days=7),
        announcement={"ru": "Все на уборку!", "en": "Everyone to the clean-up!"}))  # fmt: skip
    # The raw baseline, once before the fan-out and once after (a shared machine's load drifts
    # during a run: the ratio is against their mean), of documents built as the fan-out builds
    # its in-app deliveries.
    result: dict[str, Any] = {"raw_before_s": await raw_insert(mongo_url, f"{database}_raw1",
                              shaped_like_deliveries(campaign, count * (2 if webhook else 1)))}  # fmt: skip
    async with app.router.lifespan_context(app):
        while not runtime.bus.ready():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        nc = await nats.connect(nats_url)
        js = nc.jetstream(timeout=10)
        before = (await js.stream_info("NOTIFIER")).state.messages
        started = time.perf_counter()
        await js.publish(campaign.nats_subject, campaign.to_json(), stream="CAMPAIGNS",
                         headers={"Nats-Msg-Id": campaign.id})  # fmt: skip
        while consumed._value.get() < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        result["fanout_s"] = time.perf_counter() - started
        docs = await store.deliveries.find({"cause_event_id": campaign.id}).to_list(None)
        result["deliveries"] = len(docs)
        expected = count * (2 if webhook else 1)
        assert len(docs) == expected, f"{len(docs)} deliveries, expected {expected}"
        while (await js.stream_info("NOTIFIER")).state.messages - before < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        result["inapp_announced_s"] = time.perf_counter() - started
        if webhook:
            while receiver.count < count:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            result["pushed_s"] = time.perf_counter() - started
        await nc.close()
    # The same documents, fresh ids, one raw insert_many on the same server.
    raw = [{**d, "_id": uuid.uuid4().hex} for d in docs]
    result["raw_after_s"] = await raw_insert(mongo_url, f"{database}_raw2", raw)
    result["raw_insert_s"] = (result["raw_before_s"] + result["raw_after_s"]) / 2
    return result


def shaped_like_deliveries(campaign: CloudEvent, count: int) -> list[dict[str, Any]]:
    """In-app deliveries of the campaign as the fan-out builds them (`deliveries.inapp`), for
    members like the seeded ones."""
    data = CampaignStarted.model_validate(campaign.data)
    [notice] = rules.notices(data, rules.Lookups())
    now = datetime.now(UTC)
    return [
        {**doc, "order_key": f"{int(now.timestamp() * 1000):013d}:{doc['_id']}"}
        for member in member_docs(count)
        for doc in [deliveries.inapp(campaign, notice.message, Recipient.from_doc(member), now)[0]]
    ]


async def raw_insert(mongo_url: str, database: str, docs: list[dict[str, Any]]) -> float:
    """One `insert_many(ordered=False)` of the documents (fresh ids) on the server; seconds."""
    raw = [{**d, "_id": uuid.uuid4().hex} for d in docs]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    target = mongo[database]["deliveries"]
    await target.find_one({})  # connect before the clock starts
    started = time.perf_counter()
    await target.insert_many(raw, ordered=False)
    elapsed = time.perf_counter() - started
    await mongo.drop_database(database)
    await mongo.close()
    return elapsed


@asynccontextmanager
async def receiving(nats_url: str) -> AsyncIterator[tuple[Receiver, str]]:
    """The CAMPAIGNS stream declared and a webhook receiver served on a free port while the
    block runs: yields the receiver and its hook URL."""
    receiver = Receiver()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(receiver, host=LOCALHOST, port=port,
                                           lifespan="off", log_level="warning"))  # fmt: skip
    serving = asyncio.create_task(server.serve())
    try:
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(StreamConfig(
            name="CAMPAIGNS", subjects=["campaigns.>"], storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW.total_seconds()))  # fmt: skip
        await nc.close()
        yield receiver, f"http://{LOCALHOST}:{port}/hook"
    finally:
        server.should_exit = True
        await serving


async def run(count: int, webhook: bool = True) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    with embedded_servers() as (nats_url, mongo_url):
        async with receiving(nats_url) as (receiver, hook):
            inapp = await fan_out(nats_url, mongo_url, count, None, receiver)
            pushed = await fan_out(nats_url, mongo_url, count, hook, receiver) if webhook else None
    result: dict[str, Any] = {
        "members": count, "load_start": load_start, "load_average": os.getloadavg()[0],
        "inapp": {k: round(v, 3) for k, v in inapp.items()},
        "inapp_ratio": round(inapp["fanout_s"] / inapp["raw_insert_s"], 2)}  # fmt: skip
    if pushed is not None:
        result["webhook"] = {k: round(v, 3) for k, v in pushed.items()}
        result["webhook_ratio"] = round(pushed["fanout_s"] / pushed["raw_insert_s"], 2)
    return result


def webhook_row(result: dict[str, Any]) -> str:
    w = result.get("webhook")
    if w is None:
        return "| in-app + webhook | not run (`--no-webhook`) | | | | | |\n"
    return (f"| in-app + webhook (daily budget spent per member) | {w['deliveries']:,} | "
            f"{w['fanout_s']:.2f} s | {w['raw_insert_s']:.2f} s | {result['webhook_ratio']} | "
            f"{w['inapp_announced_s']:.2f} s | {w.get('pushed_s', float('nan')):.2f} s |\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--no-webhook", action="store_true", help="the in-app run alone")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args.members, webhook=not args.no_webhook))
    emit(result)
    if args.no_write:
        return
    a, n = result["inapp"], args.members
    flag = " --no-webhook" if args.no_webhook else ""
    write_section(
        TITLE.format(n=n),
        f"""
Machine: {machine()}; load average {result["load_start"]:.1f} at the start, {result["load_average"]:.1f} at the end.
Command: `.venv/bin/python -m bench.fanout --members {n}{flag}`.
One campaign-started for an audience of {n:,} members (projection seeded), through the real
consumer of an in-process notifier on the embedded nats-server and nx-27017; the raw baseline
is one `insert_many(ordered=False)` of as many documents of the same shape, same server, same run
(the mean of one before the fan-out and one after: {a["raw_before_s"]:.2f} s and {a["raw_after_s"]:.2f} s).
"Fan-out" ends when the consumer acknowledges campaign-started: every delivery is written.

| run | deliveries written | fan-out | raw insert_many | ratio | all notification-sent published (in-app) | all pushed |
|---|---|---|---|---|---|---|
| in-app only | {a["deliveries"]:,} | {a["fanout_s"]:.2f} s | {a["raw_insert_s"]:.2f} s | {result["inapp_ratio"]} | {a["inapp_announced_s"]:.2f} s | — |
{webhook_row(result)}
The pushes go to a webhook receiver in the same process as the notifier (one CPU-bound Python
process for both), so "all pushed" understates what the dispatcher does against a remote peer.
""",
    )


if __name__ == "__main__":
    main()
