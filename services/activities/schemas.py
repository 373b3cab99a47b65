"""The activities HTTP resources: what a client sends (every field bounded, shared/limits.py)
and what it gets back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, Field, StrictBool, field_validator

from shared.clock import from_ms
from shared.documents import Doc
from shared.events import Role
from shared.limits import Ident, Moment, Region, Request, Tag, Title, line, text

#: Bounds of an activity. A shift list longer than a day's programme is a mistake or an attack;
#: the activity-published event carries every shift, and must stay well under NATS's limit.
SHIFTS_MAX = 100
CAPACITY_MAX = 5000
REGIONS_MAX = 100
INTERESTS_MAX = 50
#: Reminders: a few lead times, each at most 30 days before the shift.
REMINDERS_MAX = 5
REMINDER_MINUTES_MAX = 30 * 24 * 60
DESCRIPTION_MAX = 5000

Description = text(DESCRIPTION_MAX)
Location = line(300)
ShiftRole = line(100)
Reason = line(500)
#: A seat count: a JSON integer (not `true`, not "5"), at least one.
Capacity = Annotated[int, Field(strict=True, ge=1, le=CAPACITY_MAX)]
ReminderMinutes = Annotated[int, Field(strict=True, ge=1, le=REMINDER_MINUTES_MAX)]
CheckinCode = line(20)
Status = Literal["draft", "published", "cancelled"]


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


TimeZone = Annotated[line(64), AfterValidator(_known_zone)]


def _utc(value: datetime) -> datetime:
    # A time without an offset is UTC, as every time in the API.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: A moment in the platform's lifetime, UTC when given without an offset.
When = Annotated[Moment, AfterValidator(_utc)]


class AudienceIn(Request):
    """Who the activity is for (its announcement); empty lists do not restrict."""

    regions: list[Region] = Field(default_factory=list, max_length=REGIONS_MAX)
    roles: list[Role] = Field(default_factory=list, max_length=8)
    interests: list[Tag] = Field(default_factory=list, max_length=INTERESTS_MAX)


class ShiftIn(Request):
    role: ShiftRole
    starts_at: When
    ends_at: When
    capacity: Capacity


class ActivityIn(Request):
    title: Title
    description: Description = ""
    region: Region
    location: Location | None = None
    timezone: TimeZone = "Europe/Moscow"
    organiser_id: Ident
    audience: AudienceIn = Field(default_factory=AudienceIn)
    shifts: list[ShiftIn] = Field(min_length=1, max_length=SHIFTS_MAX)
    reminders_minutes: list[ReminderMinutes] = Field(
        default_factory=lambda: [1440, 120],
        max_length=REMINDERS_MAX,
        description="minutes before a shift's start at which confirmed members are reminded",
    )
    status: Literal["draft", "published"] = "draft"
    announce: StrictBool = Field(False, description="announce it to the audience when published")

    @field_validator("reminders_minutes")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        return sorted(set(value), reverse=True)


class ShiftPatchIn(Request):
    shift_id: Ident
    role: ShiftRole | None = None
    starts_at: When | None = None
    ends_at: When | None = None
    capacity: Capacity | None = None


class ActivityPatchIn(Request):
    title: Title | None = None
    description: Description | None = None
    location: Location | None = None
    status: Literal["draft", "published"] | None = None
    shifts: list[ShiftPatchIn] = Field(default_factory=list, max_length=SHIFTS_MAX)


class CancelIn(Request):
    reason: Reason


class SignupIn(Request):
    member_id: Ident


class AttendanceIn(Request):
    member_id: Ident
    shift_id: Ident
    action: Literal["check-in", "check-out", "no-show"]
    at: When | None = Field(None, description="when it happened (default: now)")
    recorded_by: Ident | None = Field(
        None, description="the coordinator's member id (default: the API key that records it)"
    )


class CheckinIn(Request):
    code: CheckinCode
    member_id: Ident


class LinkIn(Request):
    recorded_by: Ident | None = Field(
        None,
        description="the coordinator's member id: what the link's page records is recorded by "
        "them (default: the member the API key is bound to, else the API key)",
    )


# -- answers ------------------------------------------------------------------------------------


def _time(doc: Doc, key: str) -> datetime | None:
    value = doc.get(key)
    return from_ms(value) if value is not None else None


class ShiftOut(BaseModel):
    shift_id: str
    role: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    confirmed: int = 0
    waitlisted: int = 0
    attended: int = 0
    no_show: int = 0
    walk_ins: int = 0
    checkin_code: str | None = Field(None, description="only for manage or checkin keys")


class ActivityOut(BaseModel):
    activity_id: str
    title: str
    description: str
    region: str
    location: str | None
    timezone: str
    organiser_id: str | None
    audience: dict[str, list[str]]
    reminders_minutes: list[int]
    status: Status
    announce: bool
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    published_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    shifts: list[ShiftOut]

    @classmethod
    def from_doc(cls, doc: Doc, shifts: list[ShiftOut]) -> ActivityOut:
        return cls(
            activity_id=doc["_id"],
            **{k: doc.get(k) for k in ("title", "region", "location", "timezone", "status")},
            description=doc.get("description") or "",
            organiser_id=doc.get("organiser_id"),
            audience=doc.get("audience") or {},
            reminders_minutes=list(doc.get("reminders_minutes") or []),
            announce=bool(doc.get("announce")),
            starts_at=from_ms(doc["starts_ms"]),
            ends_at=from_ms(doc["ends_ms"]),
            created_at=from_ms(doc["created_ms"]),
            published_at=_time(doc, "published_ms"),
            cancelled_at=_time(doc, "cancelled_ms"),
            cancel_reason=doc.get("cancel_reason"),
            shifts=shifts,
        )


class ActivityList(BaseModel):
    items: list[ActivityOut]
    next_cursor: str | None = None


class AttendanceOut(BaseModel):
    state: Literal["present", "attended", "no-show"]
    checked_in_at: datetime | None = None
    checked_out_at: datetime | None = None
    hours: float | None = None
    walk_in: bool = False
    recorded_by: str | None = None


class SignupOut(BaseModel):
    signup_id: str
    activity_id: str
    shift_id: str
    member_id: str
    status: Literal["pending", "confirmed", "waitlisted", "cancelled", "walk-in"]
    position: int | None = Field(None, description="place on the waitlist (1 is next)")
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    confirmed_by_member_at: datetime | None = None
    cancelled_at: datetime | None = None
    reason: str | None = None
    attendance: AttendanceOut | None = None

    @classmethod
    def from_doc(cls, doc: Doc, position: int | None = None) -> SignupOut:
        attendance = None
        if doc.get("att") is not None:
            attendance = AttendanceOut(
                state=doc["att"],
                checked_in_at=_time(doc, "checked_in_ms"),
                checked_out_at=_time(doc, "checked_out_ms"),
                hours=doc.get("hours"),
                walk_in=bool(doc.get("walk_in")),
                recorded_by=doc.get("recorded_by"),
            )
        return cls(
            signup_id=doc["_id"],
            **{k: doc[k] for k in ("activity_id", "shift_id", "member_id", "status")},
            position=position,
            starts_at=from_ms(doc["starts_ms"]),
            ends_at=from_ms(doc["ends_ms"]),
            created_at=from_ms(doc["created_ms"]),
            confirmed_by_member_at=_time(doc, "confirmed_ms"),
            cancelled_at=_time(doc, "cancelled_ms"),
            reason=doc.get("reason"),
            attendance=attendance,
        )


class SignupList(BaseModel):
    items: list[SignupOut]
    next_cursor: str | None = None


class ShiftSignupOut(SignupOut):
    display_name: str | None = None


class ShiftSignupList(BaseModel):
    items: list[ShiftSignupOut]
    next_cursor: str | None = None


class MemberRecordItem(SignupOut):
    title: str | None = Field(None, description="the activity's title")
    role: str | None = Field(None, description="the shift's role")


class MemberRecord(BaseModel):
    member_id: str
    items: list[MemberRecordItem]
    next_cursor: str | None = None
    attended: int = Field(description="shifts the member attended (all time)")
    hours: float = Field(description="hours the member's attendance proves (all time)")


class FiguresOut(BaseModel):
    capacity: int
    confirmed: int
    waitlisted: int
    attended: int
    no_shows: int
    walk_ins: int
    fill_rate: float | None = Field(description="confirmed over capacity; null without seats")
    no_show_rate: float | None = Field(
        description="no-shows over members with a seat whose attendance is known"
    )
    hours: float
    first_time_attendees: int


class ShiftReportOut(FiguresOut):
    shift_id: str


class ReportOut(FiguresOut):
    activity_id: str
    status: Status
    shifts: list[ShiftReportOut]


class StatsOut(BaseModel):
    activities_30d: int
    volunteer_hours_30d: float
    attended_30d: int
    fill_rate: float | None
    no_show_rate: float | None
    first_time_attendees_30d: int
    computed_at: datetime


class LinkOut(BaseModel):
    url: str
    expires_at: datetime


def shift_out(definition: Doc, shift_id: str, ledger: Doc | None, with_code: bool) -> ShiftOut:
    counters: dict[str, Any] = ledger or {}
    return ShiftOut(
        shift_id=shift_id,
        role=definition["role"],
        starts_at=from_ms(definition["starts_ms"]),
        ends_at=from_ms(definition["ends_ms"]),
        capacity=int(definition["capacity"]),
        confirmed=int(counters.get("confirmed") or 0),
        waitlisted=int(counters.get("waitlisted") or 0),
        attended=int(counters.get("attended") or 0),
        no_show=int(counters.get("no_shows") or 0),
        walk_ins=int(counters.get("walk_ins") or 0),
        checkin_code=counters.get("code") if with_code else None,
    )
