"""Activities in the notifier (pure: no I/O): what the activities events change in its projections
of activities and sign-ups, and which message each announcement, sign-up, change, cancellation
and reminder becomes (docs/notifier.md, "Activities").

Every message about a member's own sign-up is in the `signups` category (transactional: no
marketing consent, no budget, cannot be switched off) and expires at the start of the member's
shift; announcements are in `activities` (marketing, like a campaign's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.notifier.deliveries import Cause, Occasion
from services.notifier.domain import Audience, Message
from services.notifier.rules import Notice
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc
from shared.events import ActivityPublished, CloudEvent, SignedUp, SignUpChanged

SIGNUPS = "signups"
ACTIVITIES = "activities"


def _ms(value: Any) -> int | None:
    """Epoch ms of a time given as ISO text or a datetime (None when it is neither)."""
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, str):
        try:
            return epoch_ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


# -- the projection of activities -----------------------------------------------------------------


def published(data: ActivityPublished, event_ms: int) -> Doc:
    """The activity as the notifier keeps it: what its messages show and when shifts start
    (shifts as a subdocument keyed by shift id, written whole)."""
    return {
        "title": data.title,
        "region": data.region,
        "location": data.location,
        "timezone": data.timezone,
        "reminders_minutes": list(data.reminders_minutes),
        "status": "published",
        "shifts": {
            s.shift_id: {
                "role": s.role,
                "starts_ms": epoch_ms(s.starts_at),
                "ends_ms": epoch_ms(s.ends_at),
            }
            for s in data.shifts
        },
        "event_ms": event_ms,
    }


@dataclass(frozen=True)
class ActivityChange:
    """What activity-changed changes: the fields to set, and what members are told or
    reminded anew."""

    fields: Doc
    place_changed: bool = False
    #: Shift id -> the shift's new (starts_ms, ends_ms), for shifts whose time changed.
    moved: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Lead times no longer in `reminders_minutes` (their planned reminders are cancelled).
    removed_leads: frozenset[int] = frozenset()
    leads_changed: bool = False


def changed(current: Mapping[str, Any], changes: Mapping[str, Any]) -> ActivityChange:
    """The change activity-changed makes to the stored activity `current`. A shift is given
    whole (with its id); one the notifier did not know is added, and told about as moved."""
    fields: Doc = {k: changes[k] for k in ("title", "location", "timezone") if k in changes}
    place_changed = "location" in changes and changes["location"] != current.get("location")
    shifts = {k: dict(v) for k, v in (current.get("shifts") or {}).items()}
    moved: dict[str, tuple[int, int]] = {}
    for given in changes.get("shifts") or []:
        if not isinstance(given, Mapping) or not given.get("shift_id"):
            continue
        sid = str(given["shift_id"])
        before = shifts.get(sid, {})
        starts = _ms(given.get("starts_at")) or before.get("starts_ms")
        ends = _ms(given.get("ends_at")) or before.get("ends_ms")
        if starts is None or ends is None:
            continue
        if (starts, ends) != (before.get("starts_ms"), before.get("ends_ms")):
            moved[sid] = (starts, ends)
        shifts[sid] = {
            "role": given.get("role", before.get("role")),
            "starts_ms": starts,
            "ends_ms": ends,
        }
    if changes.get("shifts"):
        fields["shifts"] = shifts
    old_leads = {int(m) for m in current.get("reminders_minutes") or ()}
    new_leads = old_leads
    if isinstance(changes.get("reminders_minutes"), list):
        new_leads = {int(m) for m in changes["reminders_minutes"]}
        fields["reminders_minutes"] = sorted(new_leads, reverse=True)
    return ActivityChange(
        fields,
        place_changed,
        moved,
        frozenset(old_leads - new_leads),
        new_leads != old_leads,
    )


# -- the projection of sign-ups -----------------------------------------------------------------


def signup(event: CloudEvent, data: SignedUp | SignUpChanged) -> Doc:
    """A sign-up as the notifier keeps it: who is on which shift, and its state. The event that
    set it (`event_id`, `event_ms`, `event_type`) orders the writes and says which event's
    message is the current one."""
    return {
        "member_id": data.member_id,
        "activity_id": data.activity_id,
        "shift_id": data.shift_id,
        "status": data.status,
        "reason": getattr(data, "reason", None),
        "position": getattr(data, "position", None),
        "event_id": event.id,
        "event_ms": epoch_ms(event.time),
        "event_type": event.type,
    }


# -- messages -----------------------------------------------------------------------------------


def _iso(ms: Any) -> str | None:
    return from_ms(ms).isoformat() if isinstance(ms, int | float) else None


def shift_of(activity: Mapping[str, Any] | None, shift_id: str) -> Doc:
    return dict(((activity or {}).get("shifts") or {}).get(shift_id) or {})


def facts(activity: Mapping[str, Any] | None, shift_id: str) -> Doc:
    """What a message about a shift shows: the activity's title and place, the shift's time
    (rendered in the member's time zone)."""
    shift = shift_of(activity, shift_id)
    return {
        "activity": (activity or {}).get("title"),
        "location": (activity or {}).get("location"),
        "starts_at": _iso(shift.get("starts_ms")),
        "ends_at": _iso(shift.get("ends_ms")),
    }


def expiry(activity: Mapping[str, Any] | None, shift_id: str) -> datetime | None:
    """A message about a shift is pointless once it has started."""
    starts = shift_of(activity, shift_id).get("starts_ms")
    return from_ms(starts) if isinstance(starts, int | float) else None


def actions(signup_id: str, *names: str) -> Doc:
    """What a client can do with the sign-up (the activities service's endpoints)."""
    known = {
        "confirm": f"POST /v1/signups/{signup_id}/confirm",
        "cancel": f"DELETE /v1/signups/{signup_id}",
    }
    return {name: known[name] for name in names}


def about_signup(
    template: str,
    stored: Mapping[str, Any],
    activity: Mapping[str, Any] | None,
    *,
    can: tuple[str, ...] = ("cancel",),
    **more: Any,
) -> Message:
    """A message to the member of a sign-up, about their shift."""
    shift_id = str(stored["shift_id"])
    data: Doc = {
        "signup_id": stored["_id"],
        "activity_id": stored["activity_id"],
        "shift_id": shift_id,
    }
    if can:
        data["actions"] = actions(str(stored["_id"]), *can)
    return Message(
        template,
        SIGNUPS,
        {**facts(activity, shift_id), **more},
        data=data,
        expires=expiry(activity, shift_id),
    )


def cancelled_occasion(activity_id: str, event: CloudEvent) -> Occasion:
    """The cause of "the activity is cancelled": activity-cancelled and every sign-up's
    sign-up-changed (reason activity-cancelled) tell it, each member once."""
    return Occasion(f"activity-cancelled:{activity_id}", event.type, event.correlationid)


def activity_cancelled(stored: Mapping[str, Any], activity: Mapping[str, Any] | None) -> Message:
    reason = (activity or {}).get("reason")
    return about_signup("activity_cancelled", stored, activity, can=(), reason=reason)


def signup_notice(
    event: CloudEvent,
    data: SignedUp | SignUpChanged,
    stored: Mapping[str, Any],
    activity: Mapping[str, Any] | None,
) -> tuple[Cause, Message] | None:
    """The message of a sign-up event for its member (None: nothing to tell)."""
    if isinstance(data, SignedUp):
        if data.status == "confirmed":
            return event, about_signup("signup_confirmed", stored, activity)
        return event, about_signup("signup_waitlisted", stored, activity, position=data.position)
    if data.status == "confirmed" and data.reason == "promoted":
        return event, about_signup("signup_promoted", stored, activity)
    if data.status == "cancelled" and data.reason == "cancelled-by-organiser":
        occasion = Occasion(f"signup-cancelled:{data.signup_id}", event.type, event.correlationid)
        return occasion, about_signup("signup_cancelled", stored, activity, can=())
    if data.status == "cancelled" and data.reason == "activity-cancelled":
        return cancelled_occasion(data.activity_id, event), activity_cancelled(stored, activity)
    # Confirmed by the member ("I'm coming") or cancelled by them: they know.
    return None


def reminder_message(reminder: Mapping[str, Any], activity: Mapping[str, Any] | None) -> Message:
    """The reminder, offering "I'm coming" and "I can't" (the sign-up's confirm and cancel)."""
    stored = {
        "_id": reminder["signup_id"],
        "activity_id": reminder["activity_id"],
        "shift_id": reminder["shift_id"],
    }
    return about_signup("activity_reminder", stored, activity, can=("confirm", "cancel"))


def reminder_occasion(reminder: Mapping[str, Any]) -> Occasion:
    rid = f"reminder:{reminder['_id']}"
    return Occasion(rid, "reminder", rid)


def change_message(
    stored: Mapping[str, Any], activity: Mapping[str, Any], change: ActivityChange
) -> Message | None:
    """What a member signed up for the activity is told of a change: the new place, and the
    new time when their shift moved (None: the change does not concern them)."""
    moved = str(stored["shift_id"]) in change.moved
    if not (moved or change.place_changed):
        return None
    return about_signup(
        "activity_changed",
        stored,
        activity,
        place_changed=change.place_changed,
        time_changed=moved,
    )


def announcement(event: CloudEvent, data: ActivityPublished) -> tuple[Cause, Notice]:
    """A published activity announced to its audience (marketing consent, budget, quiet
    hours, as a campaign's), once per activity."""
    first = min(data.shifts, key=lambda s: s.starts_at, default=None)
    last = max((s.starts_at for s in data.shifts), default=None)
    context = {
        "activity": data.title,
        "location": data.location,
        "region": data.region,
        "starts_at": first.starts_at.isoformat() if first else None,
        "ends_at": first.ends_at.isoformat() if first else None,
        "shifts": len(data.shifts),
    }
    message = Message(
        "activity_announcement",
        ACTIVITIES,
        context,
        marketing=True,
        data={"activity_id": data.activity_id},
        expires=last,
    )
    occasion = Occasion(f"activity-published:{data.activity_id}", event.type, event.correlationid)
    return occasion, Notice(message, audience=Audience.of(data.audience))
