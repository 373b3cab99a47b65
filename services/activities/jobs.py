"""Periodic work: closing due shifts (no-shows, the last `attended`), repairing what a crash
interrupted, and the community gauges.

The close job reads only shifts whose end plus the grace has come (`due_ms`); the repair reads
only what is marked as unfinished (pending sign-ups, unsettled ledger marks, unsynced
definitions, uncounted attendance), each by its index and older than `REPAIR_AFTER` (so it
never races a request still at work). Every effect is a guarded transition, so a lease that
expires mid-run, or two replicas, cost time and never a double event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from services.activities.context import Activities
from services.activities.usecases import community
from shared.clock import Clock, epoch_ms
from shared.jobs import Leases, every, on_every_replica
from shared.store import TRANSIENT_DB_ERRORS

log = logging.getLogger("sarafan.activities.jobs")

#: How old an unfinished piece of work must be before the repair takes it over.
REPAIR_AFTER = timedelta(seconds=30)
#: Items of each kind repaired per run.
REPAIR_BATCH = 200


class ActivitiesJobs:
    def __init__(self, activities: Activities) -> None:
        self.activities = activities

    async def close_shifts(self, now: datetime) -> int:
        return await self.activities.attendance.close_due(now)

    async def repair(self, now: datetime) -> int:
        """Finish what a crash left half done; returns how many items it looked at."""
        a, before = self.activities, epoch_ms(now - REPAIR_AFTER)
        store = a.store
        work: list[tuple[str, Any, Callable[[], Awaitable[Any]]]] = []
        for signup in await store.stale_pending(before, REPAIR_BATCH):
            work.append(("signups", signup["_id"], lambda s=signup: a.signups.drive(s, now)))
        for sid in await store.unsettled_ledgers(REPAIR_BATCH):
            work.append(("shifts", sid, lambda s=sid: a.ledger.settle_all(s, now, before)))
        for aid in await store.unsynced_activities(before, REPAIR_BATCH):
            work.append(("activities", aid, lambda i=aid: a.planning.sync(i, now)))
        for ledger in await store.unsynced_ledgers(before, REPAIR_BATCH):
            aid = ledger.get("activity_id")
            work.append(("shifts", ledger["_id"], lambda i=aid: a.planning.sync(i, now)))
        for signup in await store.uncounted(before, REPAIR_BATCH):
            work.append(("signups", signup["_id"], lambda s=signup: a.tally.count(s, now)))
        for kind, ident, step in work:
            try:
                await step()
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception:
                log.exception("repairing %s %s failed; the next run tries again", kind, ident)
        return len(work)

    async def refresh_gauges(self, now: datetime) -> dict[str, Any]:
        figures = await community(self.activities.store, now)
        self.activities.gauges.show(figures)
        return figures

    def loops(
        self,
        leases: Leases,
        close_every: timedelta,
        repair_every: timedelta,
        gauges_every: timedelta,
        clock: Clock,
    ) -> list[Callable[[], Awaitable[None]]]:
        """The Runtime jobs: close and repair on one replica at a time, the gauges on every
        replica (each replica's /metrics is scraped on its own)."""

        async def close(now: datetime) -> None:
            # The lease gives `now` from the wall clock; the service's clock may be moved.
            await self.close_shifts(clock())

        async def repair(now: datetime) -> None:
            await self.repair(clock())

        return [
            every(leases, "activities-close", close_every, close),
            every(leases, "activities-repair", repair_every, repair),
            on_every_replica("refreshing the gauges", gauges_every, self.refresh_gauges, clock),
        ]
