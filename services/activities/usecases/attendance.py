"""Attendance: check-in and check-out (by a coordinator, or by the member with the shift's code),
no-shows, and the one `attended` event each presence becomes.

Each transition is one guarded update of the member's sign-up (`att`: absent → present →
attended, or absent → no-show) carrying its event, so it happens once whoever races for it (two
replicas of the close job, a coordinator and the job). `attended` is emitted when the member
checks out, or by the close job at the shift's end plus the grace for those still checked in
(hours to the shift's end); a check-out after that is refused: the hours went on as verified.
The shift's figures follow from the sign-up by `ShiftTally` (counted once per sign-up and kind).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.activities import domain, presence
from services.activities.domain import Conflict, NotFound, Refused
from services.activities.store import LEDGER_FIGURES, ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases.ledger import Ledger
from services.activities.usecases.tally import ShiftTally
from shared.clock import Clock, epoch_ms, from_ms
from shared.documents import Doc
from shared.events import Attended, NoShow, new_event
from shared.query import order_key
from shared.store import TRANSIENT_DB_ERRORS, is_duplicate_key

log = logging.getLogger("sarafan.activities")

Action = Literal["check-in", "check-out", "no-show"]
#: Shifts closed per round of the close job.
CLOSE_BATCH = 100
#: No-shows marked per bulk write (a shift holds at most 5,000 seats).
NO_SHOW_BATCH = 1000


@dataclass(frozen=True)
class Mark:
    """One attendance to record: who, on which shift, what, when, and by whom."""

    shift_id: str
    member_id: str
    action: Action
    at: datetime | None
    recorded_by: str
    activity_id: str | None = None


class Attendance:
    def __init__(
        self,
        store: ActivitiesStore,
        ledger: Ledger,
        tally: ShiftTally,
        unit_of_work: Callable[[], ActivitiesUnitOfWork],
        grace: timedelta,
        clock: Clock,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.tally = tally
        self.unit_of_work = unit_of_work
        self.grace = grace
        self.clock = clock

    async def _open_ledger(self, shift_id: str, activity_id: str | None) -> Doc:
        ledger = await self.store.ledger(shift_id, LEDGER_FIGURES)
        if ledger is None or (activity_id is not None and ledger["activity_id"] != activity_id):
            raise NotFound("shift", shift_id)
        if ledger.get("status") != "published":
            raise Conflict("shift_closed", "this shift's activity is not published or cancelled")
        if ledger.get("due_ms") is None:
            raise Conflict("attendance_closed", "this shift's attendance is closed")
        return ledger

    async def record(self, mark: Mark, now: datetime | None = None) -> Doc:
        """A coordinator's check-in, check-out or no-show; the member's sign-up after."""
        now = now or self.clock()
        ledger = await self._open_ledger(mark.shift_id, mark.activity_id)
        at_ms = presence.coordinator_time(ledger, mark.at, now, self.grace)
        if mark.action == "check-in":
            return await self.check_in(ledger, mark.member_id, at_ms, mark.recorded_by, now)
        signup = await self.store.signup_of(mark.shift_id, mark.member_id)
        if signup is None:
            raise Conflict("not_signed_up", "this member has no sign-up nor check-in on the shift")
        if mark.action == "check-out":
            return await self.check_out(ledger, signup, at_ms, now)
        return await self.no_show(signup, now)

    async def self_check_in(self, code: str, member_id: str, now: datetime | None = None) -> Doc:
        """The member checks in with the shift's code (from 30 minutes before its start to its
        end). A wrong code says nothing about which codes exist."""
        now = now or self.clock()
        ledger = await self.store.ledger_by_code(domain.normalise_code(code))
        if ledger is None or ledger.get("status") == "draft":
            raise Refused("invalid_code", "this check-in code is not valid")
        if ledger.get("status") != "published" or ledger.get("due_ms") is None:
            raise Conflict("checkin_closed", "check-in for this shift is closed")
        presence.self_checkin_window(ledger, now)
        return await self.check_in(ledger, member_id, epoch_ms(now), member_id, now)

    async def check_in(
        self, ledger: Doc, member_id: str, at_ms: int, recorded_by: str, now: datetime
    ) -> Doc:
        domain.active_member(await self.store.member(member_id), member_id)
        signup = await self.store.signup_of(ledger["_id"], member_id)
        if signup is None:
            signup = await self._walk_in(ledger, member_id, at_ms, recorded_by, now)
        state = signup.get("att")
        if state == "no-show":
            raise Conflict("marked_no_show", "this member was recorded as a no-show")
        if state == "attended":
            raise Conflict("already_checked_out", "this member has checked out already")
        if state is None:
            walk_in = int(signup["status"] != "confirmed")
            fields = {
                "att": "present",
                "checked_in_ms": at_ms,
                "recorded_by": recorded_by,
                "walk_in": walk_in,
                "uncounted_ms": epoch_ms(now),
            }
            async with self.unit_of_work() as uow:  # committed on leaving, before the read
                uow.signups.mark_present(signup["_id"], fields)
            signup = await self.store.signup(signup["_id"]) or signup
        await self.tally.count(signup, now)
        return signup

    async def _walk_in(
        self, ledger: Doc, member_id: str, at_ms: int, recorded_by: str, now: datetime
    ) -> Doc:
        """A member without a sign-up who came: a sign-up of status `walk-in`, holding no seat."""
        now_ms = epoch_ms(now)
        signup_id = f"su_{uuid.uuid4().hex}"
        doc = {
            "_id": signup_id,
            "activity_id": ledger["activity_id"],
            "shift_id": ledger["_id"],
            "member_id": member_id,
            "status": "walk-in",
            "attempt": 1,
            "starts_ms": int(ledger["starts_ms"]),
            "ends_ms": int(ledger["ends_ms"]),
            "created_ms": now_ms,
            "member_key": order_key(now_ms, signup_id),
            "att": "present",
            "checked_in_ms": at_ms,
            "recorded_by": recorded_by,
            "walk_in": 1,
            "uncounted_ms": now_ms,
        }
        try:
            # A duplicate key means a twin check-in was first: committed here to read it.
            async with self.unit_of_work() as uow:
                await uow.commit(uow.signups.insert(doc))
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            twin = await self.store.signup_of(ledger["_id"], member_id)
            if twin is None:
                raise
            return twin
        return doc

    async def check_out(self, ledger: Doc, signup: Doc, at_ms: int, now: datetime) -> Doc:
        state = signup.get("att")
        if state is None:
            raise Conflict("not_checked_in", "this member has not checked in")
        if state != "present":
            raise Conflict("already_checked_out", "this member's attendance is recorded already")
        if at_ms < int(signup["checked_in_ms"]):
            raise Refused("invalid_time", "check-out must not be before the check-in")
        await self._attended(ledger, signup, at_ms, now)
        return await self.store.signup(signup["_id"]) or signup

    async def _attended(self, ledger: Doc, signup: Doc, out_ms: int | None, now: datetime) -> None:
        """present → attended with the one `attended` event (check-out or the close job)."""
        in_ms = int(signup["checked_in_ms"])
        hours = presence.attended_hours(
            int(ledger["starts_ms"]), int(ledger["ends_ms"]), in_ms, out_ms
        )
        event = Attended(
            signup_id=None if signup["status"] == "walk-in" else signup["_id"],
            activity_id=signup["activity_id"],
            shift_id=signup["shift_id"],
            member_id=signup["member_id"],
            checked_in_at=from_ms(in_ms),
            checked_out_at=from_ms(out_ms) if out_ms is not None else None,
            hours=hours,
            recorded_by=signup.get("recorded_by") or "",
            walk_in=bool(signup.get("walk_in")),
        )
        fields = {"att": "attended", "hours": hours, "attended_n": 1, "uncounted_ms": epoch_ms(now)}
        if out_ms is not None:
            fields["checked_out_ms"] = out_ms
        async with self.unit_of_work() as uow:  # committed on leaving, before the read below
            uow.signups.mark_attended(signup["_id"], fields, [new_event(event, time=now)])
        await self.tally.count(await self.store.signup(signup["_id"]) or signup, now)

    async def no_show(self, signup: Doc, now: datetime) -> Doc:
        """A confirmed member who did not come (by a coordinator)."""
        if signup.get("att") == "no-show":
            return signup
        if signup["status"] != "confirmed" or signup.get("att") is not None:
            raise Conflict("not_a_no_show", "only a confirmed member not checked in is a no-show")
        await self.no_shows([signup], now)
        return await self.store.signup(signup["_id"]) or signup

    async def no_shows(self, signups: list[Doc], now: datetime) -> None:
        """Confirmed members not checked in become no-shows, each with its `no-show` event:
        one bulk write (each update guarded, so one that checked in meanwhile is left alone)
        and their figures in two more, per batch; not three writes per member."""
        for first in range(0, len(signups), NO_SHOW_BATCH):
            batch = signups[first : first + NO_SHOW_BATCH]
            no_shows = [(s, new_event(_no_show_event(s), time=now)) for s in batch]
            async with self.unit_of_work() as uow:  # committed on leaving, before the read
                uow.signups.mark_no_shows(no_shows, epoch_ms(now))
            after = await self.store.signups_by_id([s["_id"] for s in batch])
            marked = [d for d in after.values() if d.get("att") == "no-show"]
            await self.tally.count_many(marked, now)

    # -- the close job ---------------------------------------------------------------------------

    async def close_due(self, now: datetime) -> int:
        """Close every shift whose end plus the grace has come: its confirmed members not
        checked in become no-shows, those still checked in are attended to its end. Reads
        only the due shifts (`due_ms`); each in its own try."""
        closed = 0
        cutoff = epoch_ms(now - self.grace)
        while True:
            due = await self.store.due_ledgers(cutoff, CLOSE_BATCH)
            failed = 0
            for shift_id in due:
                try:
                    closed += await self.close(shift_id, now)
                except TRANSIENT_DB_ERRORS:
                    raise
                except Exception:
                    failed += 1
                    log.exception("shift %s could not be closed", shift_id)
            if len(due) < CLOSE_BATCH or failed == len(due):
                return closed

    async def close(self, shift_id: str, now: datetime) -> int:
        await self.ledger.settle_all(shift_id, now, None)
        ledger = await self.store.ledger(shift_id, {"seats": 1, **_CLOSE_FIELDS})
        if ledger is None or ledger.get("due_ms") is None:
            return 0
        if ledger.get("status") == "published":
            seated = await self.store.signups_by_id(list(ledger.get("seats") or {}))
            await self.no_shows(
                [s for s in seated.values() if s["status"] == "confirmed" and s.get("att") is None],
                now,
            )
            for signup in await self.store.present(shift_id):
                await self._attended(ledger, signup, None, now)
        async with self.unit_of_work() as uow:  # closed by this run, or by a twin: it decides
            closing = uow.ledgers.close(shift_id, int(ledger["due_ms"]), epoch_ms(now))
            done = await uow.commit(closing)
        return int(done.modified_count)


def _no_show_event(signup: Doc) -> NoShow:
    return NoShow(
        signup_id=signup["_id"],
        activity_id=signup["activity_id"],
        shift_id=signup["shift_id"],
        member_id=signup["member_id"],
    )


_CLOSE_FIELDS = {"due_ms": 1, "status": 1, "starts_ms": 1, "ends_ms": 1, "activity_id": 1}
