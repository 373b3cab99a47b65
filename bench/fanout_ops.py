"""Database operations of one fan-out, counted: what the notifier sends nx-27017 for one
campaign-started to N members, until every notification-sent is published and (with the webhook
on) every push is sent and recorded.

PyMongo's command monitoring sees each command; a write command is counted both as one round trip
and by the documents it writes (an insert's documents, an update's or a delete's statements, a
findAndModify's one document), since the embedded server does the work document by document
whatever the round trips. Counts, not times: the same on a quiet or a loaded machine.
Run: .venv/bin/python -m bench.fanout_ops [--members 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from pymongo import AsyncMongoClient, monitoring

from bench.fanout import member_docs, receiving
from bench.stack import TOKEN, embedded_servers, emit
from services.notifier.app import NotifierSettings, compose
from shared.events import CampaignStarted, new_event

#: The statements of each write command: how many documents it asks the server to write.
STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}
WRITES = ("insert", "update", "delete", "findAndModify")


class WriteCounter(monitoring.CommandListener):
    """Commands and documents written, per command and collection, in one database, while on."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.on = False
        self.commands: Counter[str] = Counter()
        self.documents: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.on or event.database_name != self.database:
            return
        name = event.command_name
        target = event.command.get(name)
        key = f"{name} {target}" if isinstance(target, str) else name
        field = STATEMENTS.get(name)
        written = len(event.command.get(field) or ()) if field else int(name == "findAndModify")
        with self._lock:
            self.commands[key] += 1
            if name in WRITES:
                self.documents[key] += written

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def written(self) -> int:
        """Documents written by updates, deletes and findAndModify (inserts apart)."""
        return sum(n for k, n in self.documents.items() if not k.startswith("insert"))

    def summary(self) -> dict[str, Any]:
        return {
            "round_trips": dict(sorted(self.commands.items())),
            "documents_written": dict(sorted(self.documents.items())),
            "documents_updated_or_deleted": self.written(),
        }


async def counted_fan_out(nats_url: str, mongo_url: str, poll: AsyncMongoClient[Any], count: int,
                          webhook: str | None) -> dict[str, Any]:  # fmt: skip
    database = f"bench_ops_{uuid.uuid4().hex[:6]}"
    counter = WriteCounter(database)
    monitoring.register(counter)  # clients created from here on report to it
    extra = {"WEBHOOK_URL": webhook, "WEBHOOK_SECRET": "whsec_YmVuY2g="} if webhook else {}
    parts = compose(NotifierSettings(NATS_URL=nats_url, MONGODB_URL=mongo_url,
                                 SARAFAN_MONGODB_DATABASE=database, SARAFAN_API_TOKEN=TOKEN,
                                 SARAFAN_NOTIFIER_POLL_SECONDS=0.1, **extra))  # fmt: skip
    app, store = parts.app, parts.store
    runtime = app.state.runtime
    await store.members.insert_many(member_docs(count), ordered=False)
    now = datetime.now(UTC)
    campaign = new_event(CampaignStarted(
        campaign_id=f"c_{uuid.uuid4().hex[:6]}", name="Большая уборка", kind="challenge",
        audience={"regions": ["moscow"], "roles": ["volunteer"]}, starts_at=now,
        ends_at=now + timedelta(days=7),
        announcement={"ru": "Все на уборку!", "en": "Everyone to the clean-up!"}))  # fmt: skip
    sent = 2 * count if webhook else count
    async with app.router.lifespan_context(app):
        while not runtime.bus.ready():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        nc = await nats.connect(nats_url)
        js = nc.jetstream(timeout=10)
        before = (await js.stream_info("NOTIFIER")).state.messages
        counter.on = True
        await js.publish(campaign.nats_subject, campaign.to_json(), stream="CAMPAIGNS",
                         headers={"Nats-Msg-Id": campaign.id})  # fmt: skip
        while (await js.stream_info("NOTIFIER")).state.messages - before < sent:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await settled(poll[database])
        counter.on = False
        await nc.close()
    return counter.summary()


async def settled(db: Any) -> None:
    """Until nothing is pending in an outbox nor being sent (the last writes are counted too)."""
    while True:
        pending = await db["deliveries"].find_one({"outbox_pending": {"$gt": 0}}, {"_id": 1})
        batch = await db["outbox_batches"].find_one({}, {"_id": 1})
        sending = await db["deliveries"].find_one({"status": {"$eq": "sending"}}, {"_id": 1})
        if pending is None and batch is None and sending is None:
            return
        await asyncio.sleep(0.1)


async def run(count: int) -> dict[str, Any]:
    with embedded_servers() as (nats_url, mongo_url):
        # Created before any counter is registered: its polls are not counted.
        poll: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
        try:
            async with receiving(nats_url) as (_, hook):
                inapp = await counted_fan_out(nats_url, mongo_url, poll, count, None)
                pushed = await counted_fan_out(nats_url, mongo_url, poll, count, hook)
        finally:
            await poll.close()
    return {"members": count, "inapp": inapp, "webhook": pushed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()
    emit(asyncio.run(run(args.members)))


if __name__ == "__main__":
    main()
