"""Volunteer hours: recorded `pending` and decided by a coordinator or staff member (the rules
are in contributions.py), or made approved at once by an attendance at an activity
(attendance.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from services.engagement import attendance
from services.engagement import contributions as rules
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.scoring import derived_event_id
from services.engagement.store import EngagementStore
from services.engagement.usecases.base import Batch, active_member, inserted
from shared.clock import Clock
from shared.documents import Doc
from shared.events import Attended, CloudEvent, new_event

log = logging.getLogger("sarafan.engagement")


@dataclass(frozen=True)
class NewHours:
    entry_id: str
    member_id: str
    hours: float
    activity: str
    date: date
    note: str


@dataclass(frozen=True)
class DecideHours:
    entry_id: str
    by: str
    status: str  # approved | rejected
    reason: str
    #: The Idempotency-Key record that will keep this answer, if the request has a key.
    request_record: str | None = None


class MemberNotYetKnown(LookupError):
    """An attendance names a member whose member-joined has not reached this service yet (the
    two streams are not ordered with each other): a later try may find them."""


class Hours:
    """Volunteer hours: each recording, decision or batch of attendances one unit of work."""

    def __init__(
        self, store: EngagementStore, unit_of_work: Callable[[], EngagementUnitOfWork], clock: Clock
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.clock = clock

    async def record_hours(self, cmd: NewHours) -> Doc:
        """Record volunteer hours as `pending` (no event until they are approved)."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            await active_member(self.store, cmd.member_id)
            entry = rules.hours_entry(
                cmd.entry_id, cmd.member_id, cmd.hours, cmd.activity, cmd.date, cmd.note, now
            )
            if not await inserted(uow, uow.hours.insert(entry, [])):
                entry = await self.store.hours_entry(cmd.entry_id) or entry
        return entry

    async def decide_hours(self, cmd: DecideHours) -> Doc:
        """Approve (hours-approved: they score) or reject pending hours; the entry after it."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            entry = await self.store.hours_entry(cmd.entry_id)
            if entry is None:
                raise rules.NotFound("hours entry", cmd.entry_id)
            rules.decider(await active_member(self.store, cmd.by), cmd.by, entry["member_id"])
            if cmd.request_record is not None:
                # The kept response will show the member's entry: erasure must find it by the
                # member (noted first, so that it exists whenever the record may: committed).
                note = uow.requests.note_decision_request(cmd.request_record, entry["member_id"])
                await uow.commit(note)
            if entry["status"] == "pending":
                decision, approved = rules.decide_hours(entry, cmd.by, cmd.status, cmd.reason, now)
                events = [new_event(data, time=now) for data in approved]
                step = uow.hours.decide(cmd.entry_id, decision, events)
                if (await uow.commit(step)).modified_count == 1:
                    return {**entry, **decision}
                entry = await self.store.hours_entry(cmd.entry_id) or entry
        return rules.already_decided(entry, cmd.status)

    async def credit_attendance(self, batch: Batch) -> int:
        """Activities' events: titles and time zones noted, then each attendance an approved
        hours entry with its hours-approved (attendance.py), all the batch's entries in one
        unordered insert; scoring follows from hours-approved as for hours approved by hand.
        Returns how many entries were made (an attendance credited before makes none)."""
        for event, data in batch:
            note = attendance.activity_note(event.time, data)
            if note is not None:
                await self.store.note_activity(
                    note.activity_id, note.at_ms, note.title, note.timezone
                )
        attended = [(event, data) for event, data in batch if isinstance(data, Attended)]
        if not attended:
            return 0
        entries = await self._entries(attended)
        async with self.unit_of_work() as uow:
            step = uow.hours.insert_entries(entries)
        return len(entries) - len(step.refused)  # those made before are refused as duplicates

    async def _entries(
        self, attended: list[tuple[CloudEvent, Attended]]
    ) -> list[tuple[Doc, CloudEvent]]:
        """The approved entries, each with its hours-approved, that the attendances make."""
        member_ids = {data.member_id for _, data in attended}
        members = await self.store.members_by_id(member_ids)
        unknown = sorted(member_ids - set(members))
        if unknown:
            raise MemberNotYetKnown(f"member(s) {unknown} not known yet (member-joined pending)")
        activities = await self.store.activities_by_id({data.activity_id for _, data in attended})
        entries: dict[str, tuple[Doc, CloudEvent]] = {}
        for event, data in attended:
            if members[data.member_id].get("status") == "erased":
                continue  # a replayed attendance must not bring an erased member's hours back
            made = attendance.attendance_entry(data, activities.get(data.activity_id), event.time)
            if made is None:
                log.info("attendance %s of %s has no hours: nothing to credit", event.id,
                         data.shift_id)  # fmt: skip
                continue
            entry, approved = made
            if entry["_id"] in entries:
                continue  # the same member and shift again in this batch: the first one counts
            # The entry's one hours-approved: its id follows the entry's (the same on every try).
            ident = derived_event_id("hours-approved", entry["_id"])
            entries[entry["_id"]] = (
                entry,
                new_event(
                    approved, event_id=ident, time=event.time, correlation_id=event.correlationid
                ),
            )
        return list(entries.values())
