"""Bounds every request body obeys: lengths, finite numbers, dates in a sane window, no control
characters where a person's name or a title goes.

Clients send anything. Each bound here exists because something downstream breaks without it:
an email header refuses a line break in a name, NATS refuses an event over its payload limit,
Python's datetime refuses year 0 after a time zone shift, JSON has no infinity, a list of a
million tags is a denial of service. Checked at the edge, a bad value is a 422 with a message
and nothing is stored.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

#: Characters refused in one-line text (names, titles, tags): C0 and C1 controls (NUL, CR, LF,
#: VT, NEL …), line and paragraph separators, and the invisible direction overrides that make
#: a name display as something else.
LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
#: In longer text (a post's body, a note) line breaks and tabs are fine; the rest is not.
TEXT_CONTROLS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _one_line(value: str) -> str:
    if LINE_CONTROLS.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def _text(value: str) -> str:
    if TEXT_CONTROLS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _moment(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware <= LATEST:
        raise ValueError("must lie between 2000-01-01 and 2100-01-01")
    return value


def _day(value: date) -> date:
    if not EARLIEST.date() <= value <= LATEST.date():
        raise ValueError("must lie between 2000-01-01 and 2100-01-01")
    return value


def line(max_length: int, min_length: int = 1) -> Any:
    """One line of text a person typed: stripped, bounded, no control characters."""
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(_one_line),
    ]


def text(max_length: int, min_length: int = 0) -> Any:
    """Longer text (a body, a note): bounded, line breaks allowed, other controls not."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(_text),
    ]


#: A person's name as others see it.
Name = line(100)
#: A post's title, a campaign's name, an activity.
Title = line(200)
#: A tag: an interest, a skill, a post's tag.
Tag = line(50)
#: A region as the organisation names them.
Region = line(100)
#: An id one of the services handed out (uuid-like), or a client's reference.
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
#: A moment in the platform's lifetime (aware or UTC).
Moment = Annotated[datetime, AfterValidator(_moment)]
#: A day in the platform's lifetime.
Day = Annotated[date, AfterValidator(_day)]
#: Points of a scoring rule or a milestone: finite, not negative, not absurd.
Points = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class Request(BaseModel):
    """A request body: unknown fields refused, strings stripped, no NaN or infinity anywhere."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)
