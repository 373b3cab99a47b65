"""Periodic work that must run once across replicas: a lease document claimed atomically."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from shared.events import utcnow
from shared.store import epoch_ms, is_duplicate_key

log = logging.getLogger("sarafan.jobs")

INSTANCE_ID = uuid.uuid4().hex[:12]


class Leases:
    """`claim` returns True for exactly one replica until the lease expires."""

    def __init__(
        self, collection: AsyncCollection[dict[str, Any]], owner: str | None = None
    ) -> None:
        self.collection = collection
        # One owner per Leases object (one runtime), so two replicas in one process compete.
        self.owner = owner or f"{INSTANCE_ID}:{uuid.uuid4().hex[:8]}"

    async def claim(self, job: str, ttl: timedelta, now: datetime | None = None) -> bool:
        now = now or utcnow()
        # Epoch milliseconds, not dates: see shared.store.epoch_ms (nx-27017 difference).
        try:
            doc = await self.collection.find_one_and_update(
                {"_id": job, "lease_until_ms": {"$lt": epoch_ms(now)}},
                {
                    "$set": {
                        "lease_until_ms": epoch_ms(now + ttl),
                        "owner": self.owner,
                        "claimed_at_ms": epoch_ms(now),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except Exception as exc:
            # The upsert met the live lease of another replica (its _id exists): not ours.
            if is_duplicate_key(exc):
                return False
            raise
        return doc is not None and doc.get("owner") == self.owner


def every(
    leases: Leases,
    job: str,
    interval: timedelta,
    work: Callable[[datetime], Awaitable[Any]],
) -> Callable[[], Awaitable[None]]:
    """A Runtime job running `work(now)` every `interval`, on one replica at a time.

    The lease lasts the interval, so a replica that dies mid-run is replaced at the next
    tick; `work` must itself be idempotent (it may, rarely, run twice).
    """

    async def loop() -> None:
        while True:
            try:
                now = utcnow()
                if await leases.claim(job, interval, now):
                    await work(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job %s failed; next try in %s", job, interval)
            await asyncio.sleep(interval.total_seconds())

    return loop


def on_every_replica(
    what: str,
    interval: timedelta,
    work: Callable[[datetime], Awaitable[Any]],
    clock: Callable[[], datetime] = utcnow,
) -> Callable[[], Awaitable[None]]:
    """A Runtime job running `work(clock())` every `interval` on every replica, no lease:
    for what each process keeps for itself (its community gauges, scraped replica by
    replica). A failure is logged and the next round tries again."""

    async def loop() -> None:
        while True:
            try:
                await work(clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; next try in %s", what, interval)
            await asyncio.sleep(interval.total_seconds())

    return loop
