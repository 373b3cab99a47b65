"""The rules of volunteering: activities and their shifts, who may sign up, check-in windows,
the hours a presence proves, and the figures of a shift.

Pure: no I/O, the time is passed in. Functions take what was read (documents) and return what
changes with the event data it raises; the use cases (`usecases/`) read, call these and write.
A refusal is raised as `Refused` (HTTP 422), `Conflict` (409) or `NotFound` (404).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.clock import epoch_ms, from_ms
from shared.documents import Doc
from shared.events import ActivityAudience, ActivityPublished, Shift

#: A shift lasts at most a day: an `attended` event carries at most 24 hours.
SHIFT_MAX = timedelta(hours=24)
#: Check-in codes: no 0/O, 1/I/L, so a code read aloud or from a poster is typed right.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
#: The statuses of a sign-up that hold (or are about to hold) a place.
LIVE = ("pending", "confirmed", "waitlisted")


class Refused(ValueError):
    """A request the rules refuse (HTTP 422 unless a subclass says otherwise)."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class Conflict(Refused):
    """The state of the activity, shift or sign-up does not allow it (HTTP 409)."""


class NotFound(LookupError):
    """What the request names does not exist (HTTP 404)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident}")
        self.what, self.ident = what, ident


# -- shifts and activities ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftTimes:
    role: str
    starts: datetime
    ends: datetime
    capacity: int


def check_shift(label: str, shift: ShiftTimes, now: datetime) -> list[str]:
    """What is wrong with one shift's times (empty when nothing)."""
    problems = []
    if shift.ends <= shift.starts:
        problems.append(f"{label}: ends_at must be after starts_at")
    elif shift.ends - shift.starts > SHIFT_MAX:
        problems.append(f"{label}: a shift lasts at most 24 hours")
    if shift.ends <= now:
        problems.append(f"{label}: the shift has already ended")
    return problems


def shift_def(shift: ShiftTimes, n: int) -> Doc:
    """A shift's definition as the activity document keeps it (times in epoch ms)."""
    return {
        "role": shift.role,
        "starts_ms": epoch_ms(shift.starts),
        "ends_ms": epoch_ms(shift.ends),
        "capacity": shift.capacity,
        "n": n,
    }


def shift_ids_in_order(activity: Doc) -> list[str]:
    """The activity's shifts by start, then as they were given."""
    shifts = activity.get("shifts") or {}
    return sorted(shifts, key=lambda s: (int(shifts[s]["starts_ms"]), int(shifts[s]["n"])))


def span(shifts: dict[str, Doc]) -> tuple[int, int]:
    """The activity's first start and last end (epoch ms)."""
    return (
        min(int(s["starts_ms"]) for s in shifts.values()),
        max(int(s["ends_ms"]) for s in shifts.values()),
    )


def shift_event(shift_id: str, definition: Doc) -> Shift:
    return Shift(
        shift_id=shift_id,
        role=definition["role"],
        starts_at=from_ms(definition["starts_ms"]),
        ends_at=from_ms(definition["ends_ms"]),
        capacity=int(definition["capacity"]),
    )


def published(activity: Doc) -> ActivityPublished:
    """The activity-published event of an activity (as it is when published)."""
    return ActivityPublished(
        activity_id=activity["_id"],
        title=activity["title"],
        region=activity["region"],
        location=activity.get("location"),
        timezone=activity["timezone"],
        organiser_id=activity.get("organiser_id") or "",
        audience=ActivityAudience.model_validate(activity.get("audience") or {}),
        shifts=[shift_event(s, activity["shifts"][s]) for s in shift_ids_in_order(activity)],
        reminders_minutes=list(activity.get("reminders_minutes") or []),
        announce=bool(activity.get("announce")),
    )


def new_activity(
    activity_id: str, fields: Doc, shifts: dict[str, ShiftTimes], status: str, now: datetime
) -> Doc:
    """The document of a new activity; raises Refused naming every problem with its shifts."""
    problems = [
        p for i, (_, s) in enumerate(shifts.items()) for p in check_shift(f"shifts.{i}", s, now)
    ]
    if problems:
        raise Refused("invalid_activity", "; ".join(problems), problems)
    defs = {sid: shift_def(s, i) for i, (sid, s) in enumerate(shifts.items())}
    starts_ms, ends_ms = span(defs)
    now_ms = epoch_ms(now)
    doc = {
        "_id": activity_id,
        **fields,
        "status": status,
        "shifts": defs,
        "starts_ms": starts_ms,
        "ends_ms": ends_ms,
        "created_ms": now_ms,
        "version": 1,
    }
    if status == "published":
        doc["published_ms"] = now_ms
    return doc


def new_ledger(activity: Doc, shift_id: str, code: str) -> Doc:
    """A shift's ledger: who holds its seats and who waits, its counters, its check-in code.

    The ledger is the one document in which a seat is claimed or given back (a single-document
    conditional update), so it decides; sign-ups follow it (`usecases/ledger.py`)."""
    definition = activity["shifts"][shift_id]
    capacity = int(definition["capacity"])
    return {
        "_id": shift_id,
        "activity_id": activity["_id"],
        "role": definition["role"],
        "starts_ms": int(definition["starts_ms"]),
        "ends_ms": int(definition["ends_ms"]),
        "capacity": capacity,
        "status": activity["status"],
        "def_version": int(activity["version"]),
        "free": capacity,
        "confirmed": 0,
        "waitlisted": 0,
        "wait_seq": 0,
        "seats": {},
        "queue": {},
        "unsettled": {},
        "unsettled_n": 0,
        "attended": 0,
        "walk_ins": 0,
        "no_shows": 0,
        "hours_cs": 0,
        "first_timers": 0,
        "counted": {},
        "code": code,
        # Present until the shift's attendance is closed (no-shows, last attended): the close
        # job reads only shifts whose `due_ms` has come (plus the grace).
        "due_ms": int(definition["ends_ms"]),
    }


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(code: str) -> str:
    """A code as typed: case, spaces and dashes do not matter."""
    return "".join(ch for ch in code.upper() if ch not in " -")


# -- changing an activity -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftChange:
    shift_id: str
    role: str | None = None
    starts: datetime | None = None
    ends: datetime | None = None
    capacity: int | None = None


@dataclass
class Change:
    """What a PATCH changes: the fields to set on the activity, the shifts' new definitions,
    the `changes` of activity-changed (new values only), and whether it publishes."""

    fields: Doc = field(default_factory=dict)
    shifts: dict[str, Doc] = field(default_factory=dict)
    changes: Doc = field(default_factory=dict)
    publishes: bool = False

    @property
    def empty(self) -> bool:
        return not (self.fields or self.shifts or self.publishes)


def change(
    activity: Doc, fields: Doc, shifts: list[ShiftChange], status: str | None, now: datetime
) -> Change:
    """What a PATCH of `activity` changes; raises Conflict or Refused with every problem."""
    if activity["status"] == "cancelled":
        raise Conflict("activity_cancelled", f"activity {activity['_id']} is cancelled")
    if status == "draft" and activity["status"] == "published":
        raise Conflict("already_published", "a published activity cannot go back to draft")
    result = Change(publishes=status == "published" and activity["status"] == "draft")
    for name, value in fields.items():
        if activity.get(name) != value:
            result.fields[name] = value
            result.changes[name] = value
    problems: list[str] = []
    for i, sc in enumerate(shifts):
        old = (activity.get("shifts") or {}).get(sc.shift_id)
        if old is None:
            raise NotFound("shift", sc.shift_id)
        new = _changed_shift(old, sc)
        if new == old:
            continue
        if int(old["ends_ms"]) <= epoch_ms(now):
            raise Conflict("shift_ended", f"shift {sc.shift_id} has ended; it cannot change")
        times = ShiftTimes(new["role"], from_ms(new["starts_ms"]), from_ms(new["ends_ms"]), 1)
        problems += check_shift(f"shifts.{i}", times, now)
        result.shifts[sc.shift_id] = new
    if problems:
        raise Refused("invalid_activity", "; ".join(problems), problems)
    if result.publishes:
        ends = [int(d["ends_ms"]) for d in {**activity["shifts"], **result.shifts}.values()]
        if max(ends) <= epoch_ms(now):
            raise Conflict("activity_ended", "every shift of this draft has ended")
    if result.shifts:
        result.changes["shifts"] = [
            shift_event(s, d).model_dump(mode="json") for s, d in result.shifts.items()
        ]
    return result


def _changed_shift(old: Doc, sc: ShiftChange) -> Doc:
    new = dict(old)
    if sc.role is not None:
        new["role"] = sc.role
    if sc.starts is not None:
        new["starts_ms"] = epoch_ms(sc.starts)
    if sc.ends is not None:
        new["ends_ms"] = epoch_ms(sc.ends)
    if sc.capacity is not None:
        new["capacity"] = sc.capacity
    return new


# -- signing up ---------------------------------------------------------------------------------


def active_member(member: Doc | None, member_id: str) -> Doc:
    """The member, if they may take part: known here, not left, not erased."""
    if member is None:
        raise Refused("unknown_member", f"member {member_id} is not known (yet)")
    status = member.get("status")
    if status == "erased":
        raise Refused("unknown_member", f"member {member_id} is not known")
    if status != "active":
        raise Refused("member_left", f"member {member_id} has left the community")
    return member


def shift_of(activity: Doc, shift_id: str) -> Doc:
    definition = (activity.get("shifts") or {}).get(shift_id)
    if definition is None:
        raise NotFound("shift", shift_id)
    return definition


def open_for_sign_up(activity: Doc, shift: Doc, now: datetime) -> None:
    """Members may sign up for a published activity's shift until it ends."""
    status = activity["status"]
    if status == "cancelled":
        raise Conflict("activity_cancelled", f"activity {activity['_id']} is cancelled")
    if status != "published":
        raise Conflict("activity_not_published", f"activity {activity['_id']} is a draft")
    if int(shift["ends_ms"]) <= epoch_ms(now):
        raise Conflict("shift_ended", "this shift has already ended")


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two [start, end) intervals share a moment (back to back is no overlap)."""
    return a[0] < b[1] and b[0] < a[1]


def overlapping(shift_id: str, times: tuple[int, int], others: list[Doc]) -> Doc | None:
    """The member's first other live sign-up whose shift overlaps `times`, if any."""
    for other in others:
        if other.get("shift_id") == shift_id or other.get("status") not in LIVE:
            continue
        if overlaps(times, (int(other["starts_ms"]), int(other["ends_ms"]))):
            return other
    return None


def overlap_refusal(other: Doc) -> Conflict:
    return Conflict(
        "overlapping_shift",
        "the member is signed up for another shift at that time",
        {"signup_id": other["_id"], "shift_id": other["shift_id"]},
    )
