"""The rules of the hours that attendance proves: an activities service's `attended` becomes an
approved hours entry, with no second approval (the organiser's check-in is the verification).

Pure: no I/O, the time is passed in. One entry per member and shift: its id is derived from the
two, so a redelivered `attended`, the same one in two batches or on two replicas, and a second
`attended` for the same member and shift (a correction, a repeated check-in) all meet the first
entry's id and change nothing — the first attendance recorded is the one credited. The entry is
written with its `hours-approved`, which the service's own consumer then scores exactly like
hours a coordinator approved by hand (docs/engagement.md, "Hours from attendance").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo

from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import ActivityChanged, ActivityPublished, Attended, EventData, HoursApproved
from shared.query import order_key

#: Where an hours entry came from: recorded by hand and decided by a coordinator, or attendance.
MANUAL, ATTENDANCE = "manual", "attendance"
#: Namespace of the ids of the entries attendance makes (one per member and shift).
ENTRY_NAMESPACE = uuid.UUID("2c6f0e7e-5d0b-4f7e-8a43-9b1f3d6a7c21")
#: An entry's `activity` is one line of at most this many characters, as a hand-recorded one.
LABEL_MAX = 200


def entry_id(shift_id: str, member_id: str) -> str:
    """The id of the hours entry of a member's attendance at a shift: the same on every try."""
    return str(uuid.uuid5(ENTRY_NAMESPACE, f"attended:{shift_id}:{member_id}"))


@dataclass(frozen=True)
class ActivityNote:
    """What an activity event tells about the activity, for the entries of its attendance:
    its title (the entries' label) and time zone (the day the hours are dated), as of `at_ms`."""

    activity_id: str
    at_ms: int
    title: str | None = None
    timezone: str | None = None


def activity_note(event_time: datetime, data: EventData) -> ActivityNote | None:
    """The title and time zone an activity-published or activity-changed gives, if any."""
    at = epoch_ms(event_time)
    if isinstance(data, ActivityPublished):
        return ActivityNote(data.activity_id, at, data.title, data.timezone)
    if isinstance(data, ActivityChanged):
        title, timezone = data.changes.get("title"), data.changes.get("timezone")
        note = ActivityNote(
            data.activity_id,
            at,
            title if isinstance(title, str) else None,
            timezone if isinstance(timezone, str) else None,
        )
        return note if note.title is not None or note.timezone is not None else None
    return None


def label(activity_id: str, activity: Doc | None) -> str:
    """The entry's `activity`: the activity's title when its publication was seen, else its id."""
    title = " ".join(str((activity or {}).get("title") or "").split())
    return (title or f"activity {activity_id}")[:LABEL_MAX]


def zone(name: str | None) -> tzinfo:
    """The activity's time zone; UTC when it is unknown or not a zone this system knows."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ValueError, KeyError):
        return UTC


def day_of_attendance(attended: Attended, timezone: str | None) -> date:
    """The day the hours were given: the check-in's date where the activity took place."""
    return attended.checked_in_at.astimezone(zone(timezone)).date()


def attendance_entry(
    attended: Attended, activity: Doc | None, recorded_at: datetime
) -> tuple[Doc, HoursApproved] | None:
    """The approved hours entry of an attendance and its hours-approved (approved by whoever
    recorded the attendance, at the time it was recorded); None for an attendance of no hours
    (checked out at once, or in after the shift's end): there are no hours to credit, and
    hours-approved carries more than 0."""
    hours = round(attended.hours, 2)
    if hours <= 0:
        return None
    ident = entry_id(attended.shift_id, attended.member_id)
    activity_label = label(attended.activity_id, activity)
    day = day_of_attendance(attended, (activity or {}).get("timezone"))
    at = epoch_ms(recorded_at)
    out = attended.checked_out_at
    entry: Doc = {
        "_id": ident,
        "member_id": attended.member_id,
        "hours": hours,
        "activity": activity_label,
        "date": day.isoformat(),
        "note": "",
        "status": "approved",
        "created_ms": at,
        "order_key": order_key(at, ident),
        "decided_by": attended.recorded_by,
        "decided_ms": at,
        "reason": "",
        "source": ATTENDANCE,
        # A whole subdocument in an insert: its boolean stays a boolean on nx-27017 too.
        "attendance": {
            "activity_id": attended.activity_id,
            "shift_id": attended.shift_id,
            "signup_id": attended.signup_id,
            "walk_in": attended.walk_in,
            "checked_in_ms": epoch_ms(attended.checked_in_at),
            "checked_out_ms": epoch_ms(out) if out is not None else None,
        },
    }
    approved = HoursApproved(
        entry_id=ident,
        member_id=attended.member_id,
        hours=hours,
        activity=activity_label,
        date=day,
        approved_by=attended.recorded_by,
    )
    return entry, approved
