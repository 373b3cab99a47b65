"""The events the activities service publishes (stream ACTIVITIES): activities and their shifts,
sign-ups with a waitlist, and attendance (the hours a volunteer's presence proves)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.events.base import EventData, EventPart, Happened, Planned, Role

SignupStatus = Literal["confirmed", "waitlisted"]
SignupChangedStatus = Literal["confirmed", "waitlisted", "cancelled"]
SignupChangeReason = Literal[
    "promoted",
    "confirmed-by-member",
    "cancelled-by-member",
    "cancelled-by-organiser",
    "activity-cancelled",
]


class ActivityAudience(EventPart):
    """Who an activity is for: members of any of the regions, roles or interests given (an
    empty list does not restrict)."""

    regions: list[str] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    interests: list[str] = Field(default_factory=list)


class Shift(EventPart):
    """One slot of an activity: a role, a time and how many volunteers it needs."""

    shift_id: str
    role: str
    starts_at: Planned
    ends_at: Planned
    capacity: int = Field(ge=1)


class ActivityPublished(EventData):
    """An activity was published: members may sign up for its shifts from now on."""

    event_type = "activity-published"
    service = "activities"
    aggregate_field = "activity_id"
    example = {
        "activity_id": "a_01",
        "title": "Tree planting in Bitsa park",
        "region": "moscow",
        "location": "Bitsa park, north gate",
        "timezone": "Europe/Moscow",
        "organiser_id": "m_01",
        "audience": {"regions": ["moscow"], "roles": [], "interests": ["ecology"]},
        "shifts": [
            {
                "shift_id": "s_01",
                "role": "planter",
                "starts_at": "2026-12-12T07:00:00Z",
                "ends_at": "2026-12-12T11:00:00Z",
                "capacity": 12,
            }
        ],
        "reminders_minutes": [1440, 120],
        "announce": True,
    }

    activity_id: str
    title: str
    region: str
    location: str | None = None
    timezone: str = "Europe/Moscow"
    organiser_id: str
    audience: ActivityAudience = Field(default_factory=ActivityAudience)
    shifts: list[Shift]
    #: Minutes before a shift's start at which confirmed members are reminded.
    reminders_minutes: list[int] = Field(default_factory=lambda: [1440, 120])
    #: Whether the notifier announces it to the audience (marketing consent, quiet hours, budget).
    announce: bool = False


class ActivityChanged(EventData):
    """A published activity changed: its title, description, place, or a shift's time or
    capacity (`changes` holds the new values only; a changed shift is given whole, with its
    `shift_id`, in `changes.shifts`)."""

    event_type = "activity-changed"
    service = "activities"
    aggregate_field = "activity_id"
    example = {
        "activity_id": "a_01",
        "changes": {
            "location": "Bitsa park, south gate",
            "shifts": [
                {
                    "shift_id": "s_01",
                    "role": "planter",
                    "starts_at": "2026-12-12T08:00:00Z",
                    "ends_at": "2026-12-12T12:00:00Z",
                    "capacity": 15,
                }
            ],
        },
    }

    activity_id: str
    changes: dict[str, Any]


class ActivityCancelled(EventData):
    """An activity was cancelled by its organisers; everyone signed up is told."""

    event_type = "activity-cancelled"
    service = "activities"
    aggregate_field = "activity_id"
    example = {"activity_id": "a_01", "reason": "storm warning"}

    activity_id: str
    reason: str


class SignedUp(EventData):
    """A member signed up for a shift: confirmed while there was room, else waitlisted."""

    event_type = "signed-up"
    service = "activities"
    aggregate_field = "member_id"
    example = {
        "signup_id": "su_01",
        "activity_id": "a_01",
        "shift_id": "s_01",
        "member_id": "m_02",
        "status": "confirmed",
    }

    signup_id: str
    activity_id: str
    shift_id: str
    member_id: str
    status: SignupStatus
    #: Place on the waitlist (1 is next), when waitlisted. Optional: dataschemaversion stays 1.
    position: int | None = None


class SignUpChanged(EventData):
    """A sign-up changed: promoted from the waitlist, confirmed ("I'm coming") or cancelled."""

    event_type = "sign-up-changed"
    service = "activities"
    aggregate_field = "member_id"
    example = {
        "signup_id": "su_01",
        "activity_id": "a_01",
        "shift_id": "s_01",
        "member_id": "m_02",
        "status": "confirmed",
        "reason": "promoted",
    }

    signup_id: str
    activity_id: str
    shift_id: str
    member_id: str
    status: SignupChangedStatus
    reason: SignupChangeReason


class Attended(EventData):
    """A member was present at a shift (checked in by a coordinator, by the shift's code, or as
    a walk-in): the hours count as verified volunteer hours."""

    event_type = "attended"
    service = "activities"
    aggregate_field = "member_id"
    example = {
        "signup_id": "su_01",
        "activity_id": "a_01",
        "shift_id": "s_01",
        "member_id": "m_02",
        "checked_in_at": "2026-11-28T07:05:00Z",
        "checked_out_at": "2026-11-28T11:00:00Z",
        "hours": 3.92,
        "recorded_by": "m_01",
        "walk_in": False,
    }

    signup_id: str | None = None
    activity_id: str
    shift_id: str
    member_id: str
    checked_in_at: Happened
    checked_out_at: Happened | None = None
    #: Check-in to check-out, bounded by the shift (to its end without a check-out), two decimals.
    hours: float = Field(ge=0, le=24)
    #: Who recorded it: the coordinator's member id, or the member (self check-in by code).
    recorded_by: str
    walk_in: bool = False


class NoShow(EventData):
    """A confirmed member was not checked in by the end of their shift (plus the grace)."""

    event_type = "no-show"
    service = "activities"
    aggregate_field = "member_id"
    example = {"signup_id": "su_01", "activity_id": "a_01", "shift_id": "s_01", "member_id": "m_02"}

    signup_id: str
    activity_id: str
    shift_id: str
    member_id: str
