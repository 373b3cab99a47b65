"""When a sign-up's reminders go, and whether a due one still goes (pure: no I/O, no clock).

A confirmed member is reminded at each of the activity's lead times before the shift starts
(`reminders_minutes`, default 24 h and 2 h). A reminder that falls in the member's quiet hours
goes when they end if that is still before the start, else in the last minute before they
began; if neither is possible (the window began already, or it runs past the start) it is
dropped. A reminder never goes at or after the start of its shift (docs/notifier.md,
"Reminders").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.notifier.timing import QuietHours, quiet_since, quiet_until
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc

#: A reminder moved before quiet hours goes this long before they begin.
BEFORE_QUIET = timedelta(minutes=1)
DEFAULT_LEADS = (1440, 120)


@dataclass(frozen=True)
class ReminderTime:
    """One lead time's reminder: when it goes, or why it does not (`at` is None)."""

    lead_minutes: int
    at: datetime | None
    #: None when planned; `missed` (the lead time had passed when the member signed up),
    #: `quiet-hours` (no moment outside them before the start), `merged` (a longer lead's
    #: reminder goes at the same instant).
    why: str | None = None


def reminder_at(
    start: datetime, lead: timedelta, now: datetime, tz: str | None, quiet: QuietHours | None
) -> tuple[datetime | None, str | None]:
    """When one reminder goes: (instant, None), or (None, why not)."""
    nominal = start - lead
    if nominal < now:
        return None, "missed"
    end = quiet_until(nominal, tz, quiet)
    if end is None:
        return nominal, None
    if end < start:
        return end, None
    began = quiet_since(nominal, tz, quiet)
    if began is not None:
        earlier = began - BEFORE_QUIET
        # Checked again: around a DST change the minute before the window may be inside it.
        if now <= earlier < start and quiet_until(earlier, tz, quiet) is None:
            return earlier, None
    return None, "quiet-hours"


def plan(
    start: datetime,
    leads: Iterable[int],
    now: datetime,
    tz: str | None,
    quiet: QuietHours | None,
) -> list[ReminderTime]:
    """Every lead time's reminder for a shift starting at `start`, longest lead first; two
    moved to the same instant are sent once."""
    planned: list[ReminderTime] = []
    taken: set[datetime] = set()
    for minutes in sorted({int(m) for m in leads if int(m) > 0}, reverse=True):
        at, why = reminder_at(start, timedelta(minutes=minutes), now, tz, quiet)
        if at is not None and at in taken:
            at, why = None, "merged"
        if at is not None:
            taken.add(at)
        planned.append(ReminderTime(minutes, at, why))
    return planned


def reminder_id(signup_id: str, lead_minutes: int, starts: datetime) -> str:
    """Deterministic: one reminder per sign-up, lead time and shift start. A shift that moves
    gets new reminders (a member reminded for the old time is reminded again for the new one);
    one moved back finds its old reminders (sent ones stay sent)."""
    return f"{signup_id}:{lead_minutes}:{epoch_ms(starts)}"


def reminder_doc(signup: Mapping[str, Any], starts: datetime, time: ReminderTime) -> Doc:
    """The planned reminder's document (`due_ms` is what the periodic job reads by range)."""
    assert time.at is not None
    return {
        "_id": reminder_id(signup["_id"], time.lead_minutes, starts),
        "signup_id": signup["_id"],
        "member_id": signup["member_id"],
        "activity_id": signup["activity_id"],
        "shift_id": signup["shift_id"],
        "lead_minutes": time.lead_minutes,
        "starts_ms": epoch_ms(starts),
        "due_ms": epoch_ms(time.at),
        "status": "planned",
    }


def still_due(
    reminder: Mapping[str, Any],
    signup: Mapping[str, Any] | None,
    activity: Mapping[str, Any] | None,
    now: datetime,
) -> str | None:
    """Why a due reminder is not sent after all (None: it goes): `cancelled` when the sign-up
    is no longer confirmed, the activity was cancelled or the shift moved since it was planned
    (its re-planned reminder goes instead); `dropped` when the shift has started."""
    if signup is None or signup.get("status") != "confirmed":
        return "cancelled"
    if activity is None or activity.get("status") != "published":
        return "cancelled"
    shift = (activity.get("shifts") or {}).get(str(reminder.get("shift_id")))
    if not shift or shift.get("starts_ms") != reminder.get("starts_ms"):
        return "cancelled"
    if epoch_ms(now) >= int(reminder["starts_ms"]):
        return "dropped"
    return None


def starts_of(reminder: Mapping[str, Any]) -> datetime:
    return from_ms(int(reminder["starts_ms"]))
