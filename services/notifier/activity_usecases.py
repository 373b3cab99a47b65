"""What the notifier does for each activities event: projections, messages, reminders.

activity-published is projected, its shifts' reminders planned (for sign-ups that arrived
first), and, when it says `announce`, announced to its audience like a campaign. Sign-up events
are taken in runs: the run's sign-ups projected in one bulk write, read back, their messages
written by one `Fanout.deliver`, their reminders planned (or cancelled) in bulk. A change of
time or place, and a cancellation, are told to everyone signed up, batch by batch. They are
the methods of `ActivityNotices`, which the notifier's use cases (`usecases.NotifierUseCases`)
extend; which method handles which event type is said once, in consumers.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.notifier import volunteering
from services.notifier.deliveries import Cause, Occasion
from services.notifier.domain import Message
from services.notifier.fanout import Fanout, Item
from services.notifier.reminder_job import Reminders, confirmed
from services.notifier.store import NotifierStore
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import (
    ActivityCancelled,
    ActivityChanged,
    ActivityPublished,
    CloudEvent,
    SignedUp,
    SignUpChanged,
)
from shared.logs import event_context

log = logging.getLogger("sarafan.notifier")
SignupEvent = tuple[CloudEvent, SignedUp | SignUpChanged]


class ActivityNotices:
    """The use cases of the activities events, with the store, the fan-out and the reminders
    (the notifier's use cases, `usecases.NotifierUseCases`, are these and the others)."""

    def __init__(self, store: NotifierStore, fanout: Fanout, reminders: Reminders) -> None:
        self.store = store
        self.fanout = fanout
        self.reminders = reminders

    # -- activities -----------------------------------------------------------------------------

    async def activity_published(self, event: CloudEvent, data: ActivityPublished) -> None:
        await self.store.project_activity(
            data.activity_id, volunteering.published(data, epoch_ms(event.time))
        )
        activity = await self.store.activity(data.activity_id)
        if activity is None or activity.get("status") != "published":
            return  # cancelled meanwhile
        for shift_id in activity.get("shifts") or {}:
            await self.reminders.replan_shift(activity, shift_id)
        if data.announce:
            cause, notice = volunteering.announcement(event, data)
            with event_context(event.id, event.correlationid):
                count = await self.fanout.notify(cause, notice)
                log.info("activity %s announced to %d member(s)", data.activity_id, count)

    async def activity_changed(self, event: CloudEvent, data: ActivityChanged) -> None:
        """The new values projected; the moved shifts' reminders planned again (every shift's
        when the lead times changed); members of a moved shift told the new time, everyone signed
        up told a new place."""
        current = await self.store.activity(data.activity_id)
        if current is None or current.get("status") != "published":
            return  # a draft, or cancelled: nobody is signed up to be told
        change = volunteering.changed(current, data.changes)
        if not await self.store.change_activity(
            data.activity_id, change.fields, epoch_ms(event.time)
        ):
            return  # cancelled meanwhile, or an older change than the one stored
        activity = {**current, **change.fields}
        for lead in change.removed_leads:
            await self.store.cancel_reminders_of_activity(data.activity_id, lead)
        shifts = activity.get("shifts") or {}
        for shift_id in shifts if change.leads_changed else change.moved:
            await self.reminders.replan_shift(activity, shift_id)
        if not (change.place_changed or change.moved):
            return

        def told(stored: Doc) -> tuple[Cause, Message] | None:
            message = volunteering.change_message(stored, activity, change)
            if message is None:
                return None
            if stored["shift_id"] in change.moved:
                # Each moved sign-up is told its own shift's new time.
                key = f"activity-changed:{event.id}:{stored['_id']}"
                return Occasion(key, event.type, event.correlationid), message
            return event, message

        await self.tell_signed_up(activity, told, ("confirmed", "waitlisted"))

    async def activity_cancelled(self, event: CloudEvent, data: ActivityCancelled) -> None:
        """Cancelled for good: its reminders too, and everyone signed up is told once, with the
        reason (the sign-ups' own cancellations, reason activity-cancelled, tell the same thing
        under the same cause, so whichever comes first is the one message)."""
        await self.store.cancel_activity(data.activity_id, data.reason, epoch_ms(event.time))
        await self.store.cancel_reminders_of_activity(data.activity_id)
        activity = await self.store.activity(data.activity_id) or {"_id": data.activity_id}
        cause = volunteering.cancelled_occasion(data.activity_id, event)

        def told(stored: Doc) -> tuple[Cause, Message]:
            return cause, volunteering.activity_cancelled(stored, activity)

        await self.tell_signed_up(activity, told, ("confirmed", "waitlisted", "cancelled"))

    async def tell_signed_up(
        self,
        activity: Doc,
        told: Callable[[Doc], tuple[Cause, Message] | None],
        statuses: tuple[str, ...],
    ) -> None:
        """A message to everyone signed up for the activity with one of `statuses`, a batch of
        sign-ups at a time (one indexed range per status; one read of their members; one
        `Fanout.deliver`). Of cancelled sign-ups, only those the activity's cancellation
        cancelled. A member with two sign-ups gets a message once per cause."""
        batch = self.fanout.limits.fanout_batch
        for status in statuses:
            async for chunk in self.store.signups_of("activity_id", activity["_id"], status, batch):
                if status == "cancelled":
                    chunk = [s for s in chunk if s.get("reason") == "activity-cancelled"]
                members = await self.store.members_by_id({s["member_id"] for s in chunk})
                items: dict[tuple[str, str], Item] = {}
                for stored in chunk:
                    member = members.get(stored["member_id"])
                    message = told(stored) if member is not None else None
                    if message is not None:
                        cause, text = message
                        items.setdefault((cause.id, stored["member_id"]), (cause, text, member))  # type: ignore[arg-type]
                await self.fanout.deliver(list(items.values()))

    # -- sign-ups -------------------------------------------------------------------------------

    async def signups_changed(self, run: list[SignupEvent]) -> None:
        """A run of signed-up and sign-up-changed events: projected in one bulk write (the last
        event of each sign-up; an older one than stored changes nothing), read back, each event's
        message written if it is still the sign-up's current one (a member signed up and promoted
        in the same run is told the promotion only), and the reminders of the confirmed sign-ups
        planned, those of the others cancelled, in bulk. A member erased since signs up nowhere."""
        if not run:
            return
        members = await self.store.members_by_id({d.member_id for _, d in run})
        run = [(e, d) for e, d in run if (members.get(d.member_id) or {}).get("status") != "erased"]
        latest = {d.signup_id: volunteering.signup(e, d) for e, d in run}
        await self.store.project_signups(latest)
        stored = await self.store.signups_by_id(latest)
        activities = await self.store.activities_by_id({d.activity_id for _, d in run})
        items: list[Item] = []
        for event, data in run:
            current = stored.get(data.signup_id)
            member = members.get(data.member_id)
            if current is None or current.get("event_id") != event.id:
                continue
            notice = volunteering.signup_notice(
                event, data, current, activities.get(data.activity_id)
            )
            if notice is not None and member is not None:
                items.append((notice[0], notice[1], member))
            elif notice is not None:
                log.info("sign-up %s: member %s not projected yet", data.signup_id, data.member_id)
        signups = list(stored.values())
        await self.reminders.plan_for(confirmed(signups), activities)
        await self.store.cancel_reminders_of_signups(
            s["_id"] for s in signups if s.get("status") != "confirmed"
        )
        await self.fanout.deliver(items)
