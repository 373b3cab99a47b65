"""Reminders of confirmed members: planned as documents with a due time, sent by a periodic job.

Planning writes one document per sign-up, lead time and shift start (`reminders.reminder_doc`)
in one bulk write per batch of sign-ups; the job (one replica at a time, under a lease) reads
the planned reminders due by now through one indexed range of (status, due_ms), checks each
against the projections (the sign-up still confirmed, the activity not cancelled, the shift not
moved, not started), and hands the batch to `Fanout.deliver`: one bulk insert of deliveries and
their notification-sent events published together, as a campaign's fan-out. The cost of a run
is the number of reminders due, never the number of activities stored.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from prometheus_client import Counter

from services.notifier import reminders, volunteering
from services.notifier.domain import Recipient
from services.notifier.fanout import Fanout, Item
from services.notifier.store import NotifierStore
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc
from shared.jobs import Leases, every
from shared.metrics import Metrics

log = logging.getLogger("sarafan.notifier.reminders")
#: Rounds of one run at most (a backlog after an outage is caught up over the next runs).
MAX_ROUNDS = 20


class Reminders:
    def __init__(self, store: NotifierStore, fanout: Fanout, metrics: Metrics, batch: int) -> None:
        self.store = store
        self.fanout = fanout
        self.clock = fanout.clock
        self.batch = batch
        self.outcomes = Counter(
            "sarafan_reminders_total",
            "Reminders of confirmed members by outcome (planned, sent, skipped: the lead time "
            "had passed at sign-up, dropped: no moment outside quiet hours before the start, "
            "or the start passed, cancelled)",
            ["service", "outcome"],
            registry=metrics.registry,
        )
        self.service = metrics.service

    def _count(self, tally: Tally[str]) -> None:
        for outcome, n in tally.items():
            if n:
                self.outcomes.labels(self.service, outcome).inc(n)

    # -- planning -------------------------------------------------------------------------------

    async def plan_for(self, signups: list[Doc], activities: dict[str, Doc]) -> None:
        """Plan the reminders of confirmed sign-ups (in one bulk write), in each member's time
        zone and quiet hours as the projection has them now. A member the projection does not
        know yet (their member-joined is still on its way) gets the reminders at the lead times
        as they are; quiet hours are checked again when it is sent."""
        if not signups:
            return
        now = self.clock()
        members = await self.store.members_by_id({s["member_id"] for s in signups})
        docs: list[Doc] = []
        tally: Tally[str] = Tally()
        for signup in signups:
            activity = activities.get(signup["activity_id"])
            starts_ms = volunteering.shift_of(activity, signup["shift_id"]).get("starts_ms")
            if activity is None or activity.get("status") != "published" or starts_ms is None:
                continue
            try:
                member = Recipient.from_doc(members[signup["member_id"]])
                tz, quiet = member.timezone, member.preferences.quiet()
            except Exception:  # not projected yet, or unreadable: the lead times as they are
                tz, quiet = None, None
            leads = activity.get("reminders_minutes")
            starts = from_ms(starts_ms)
            for time in reminders.plan(
                starts, reminders.DEFAULT_LEADS if leads is None else leads, now, tz, quiet
            ):
                if time.at is not None:
                    docs.append(reminders.reminder_doc(signup, starts, time))
                tally[
                    "planned" if time.at else "skipped" if time.why == "missed" else "dropped"
                ] += 1
        await self.store.plan_reminders(docs)
        self._count(tally)

    async def replan_shift(self, activity: Doc, shift_id: str) -> None:
        """The reminders of every confirmed member of a shift, planned again for its start
        (after a change of time or of lead times): reminders planned for another start are
        cancelled, and the shift's confirmed sign-ups are read and planned batch by batch."""
        starts_ms = volunteering.shift_of(activity, shift_id).get("starts_ms")
        if starts_ms is None:
            return
        await self.store.cancel_moved_reminders(shift_id, int(starts_ms))
        by_id = {activity["_id"]: activity}
        async for chunk in self.store.signups_of("shift_id", shift_id, "confirmed", self.batch):
            await self.plan_for(chunk, by_id)

    # -- the periodic job ----------------------------------------------------------------------

    async def run_once(self) -> int:
        """Send one batch of due reminders; returns how many were handled."""
        now = self.clock()
        due = await self.store.due_reminders(epoch_ms(now), self.batch)
        if not due:
            return 0
        signups = await self.store.signups_by_id(r["signup_id"] for r in due)
        activities = await self.store.activities_by_id(r["activity_id"] for r in due)
        members = await self.store.members_by_id(r["member_id"] for r in due)
        outcomes: dict[str, str] = {}
        items: list[Item] = []
        for r in due:
            activity = activities.get(r["activity_id"])
            why = reminders.still_due(r, signups.get(r["signup_id"]), activity, now)
            member = members.get(r["member_id"])
            if why is None and (member is None or member.get("status") != "active"):
                why = "cancelled"
            if why is None:
                message = volunteering.reminder_message(r, activity)
                items.append((volunteering.reminder_occasion(r), message, member))  # type: ignore[arg-type]
            outcomes[r["_id"]] = why or "sent"
        # Delivered first, then closed: a crash in between sends nothing twice (the deliveries'
        # ids derive from the reminder's), the next run closes them.
        await self.fanout.deliver(items)
        await self.store.close_reminders(outcomes, epoch_ms(now))
        self._count(Tally(outcomes.values()))
        return len(due)

    async def run_due(self) -> int:
        """Every reminder due by now, batch by batch (bounded; the next run goes on)."""
        handled = 0
        for _ in range(MAX_ROUNDS):
            n = await self.run_once()
            handled += n
            if n < self.batch:
                break
        if handled:
            log.info("%d due reminder(s) handled", handled)
        return handled

    def job(self, every_seconds: float) -> Any:
        """The runtime job: `run_due` every `every_seconds`, on one replica at a time."""

        async def work(_: Any) -> None:
            await self.run_due()

        return every(
            Leases(self.store.jobs), "notifier-reminders", timedelta(seconds=every_seconds), work
        )


def confirmed(signups: Iterable[Doc]) -> list[Doc]:
    return [s for s in signups if s.get("status") == "confirmed"]
