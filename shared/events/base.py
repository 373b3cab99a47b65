"""What every event shares: the vocabulary its fields use, the base of its data, its errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from shared.clock import utcnow  # noqa: F401  (re-exported: the events name their time with it)

Role = Literal["volunteer", "coordinator", "staff", "partner"]
Locale = Literal["ru", "en"]
PostKind = Literal["post", "question", "story", "event-report"]
Level = Literal["newcomer", "participant", "active", "loyal", "ambassador"]
#: The levels of engagement, lowest first (the order a member climbs them).
LEVELS: tuple[Level, ...] = get_args(Level)
CampaignKind = Literal["contest", "referral-drive", "challenge", "promotion"]
Channel = Literal["inapp", "email", "webhook", "telegram"]


class InvalidEvent(ValueError):
    """A message that is not a valid Sarafan CloudEvent; it goes to the dead-letter stream."""


class _TimeKind:
    """What a time in an event states: when something happened, or when something is planned."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Marks a field stating when something HAPPENED (a post was created, a member joined). A fact
#: cannot come from the future: a receiver reads it as at most its own clock plus a tolerance
#: (`clamp_fact_times`), so a forged or skewed date cannot buy decades of score.
FACT_TIME = _TimeKind("fact time")
#: Marks a field stating a PLAN (a campaign's start and end): it may lie far ahead, as it is.
PLAN_TIME = _TimeKind("plan time")

#: When something happened (clamped on reading to the receiver's clock plus a tolerance).
Happened = Annotated[datetime, FACT_TIME]
#: The calendar day something happened on (clamped likewise, in the earliest time zone).
HappenedOn = Annotated[date, FACT_TIME]
#: When something is planned to happen (never clamped).
Planned = Annotated[datetime, PLAN_TIME]

#: A calendar day starts up to 14 hours before it starts in UTC (UTC+14, Kiribati): a date a
#: member gives in their own zone may be UTC's tomorrow without being in the future.
EARLIEST_ZONE = timedelta(hours=14)


class EventPart(BaseModel):
    """Base of the models nested in an event's data: no NaN or infinity, as in the data."""

    model_config = ConfigDict(allow_inf_nan=False)


class EventData(BaseModel):
    """Base of every event's `data`. Subclasses set the class variables below.

    Each subclass is one fact; its docstring says when it is emitted. A field that tells a
    time is typed `Happened`/`HappenedOn` (a fact time) or `Planned` (a plan)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    event_type: ClassVar[str]
    service: ClassVar[str]
    aggregate_field: ClassVar[str]
    schema_version: ClassVar[int] = 1
    example: ClassVar[dict[str, Any]]

    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))

    @classmethod
    def fact_times(cls) -> tuple[str, ...]:
        """The fields stating when something happened (typed `Happened` or `HappenedOn`,
        optional ones included)."""
        return tuple(
            name
            for name, f in cls.model_fields.items()
            if FACT_TIME in f.metadata or FACT_TIME in time_kinds(f.annotation)
        )


def time_kinds(annotation: Any) -> set[_TimeKind]:
    """The time marks (`FACT_TIME`, `PLAN_TIME`) an annotation carries, inside an optional or
    a union too (`Happened | None`)."""
    found: set[_TimeKind] = set()
    if get_origin(annotation) is Annotated:
        found |= {m for m in get_args(annotation)[1:] if isinstance(m, _TimeKind)}
    for arg in get_args(annotation):
        if arg is not annotation:
            found |= time_kinds(arg)
    return found


def aware(moment: datetime) -> datetime:
    """A time as an aware datetime: a time without an offset is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def clamp_fact_times(data: EventData, latest: datetime) -> EventData:
    """`data` with every fact time later than `latest` set to `latest` (a day: to the latest
    day it can be anywhere then); the same object when nothing was later."""
    changes: dict[str, Any] = {}
    for name in data.fact_times():
        value = getattr(data, name)
        if isinstance(value, datetime):
            if aware(value) > latest:
                changes[name] = latest
        elif isinstance(value, date) and value > (day := (latest + EARLIEST_ZONE).date()):
            changes[name] = day
    return data.model_copy(update=changes) if changes else data
