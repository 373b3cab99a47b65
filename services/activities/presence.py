"""The rules of attendance: when a shift's check-in is open, the hours a presence proves, and the
figures of a shift (rates from its counters).

Pure: no I/O, the time is passed in; refusals as in `domain` (Refused, Conflict).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.activities.domain import Conflict, Refused
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc

#: Self check-in by code opens this long before a shift starts (and closes at its end).
CHECKIN_OPENS_BEFORE = timedelta(minutes=30)
#: A time a coordinator gives (`at`) may be this far ahead of the server's clock.
CLOCK_SKEW = timedelta(minutes=5)


def self_checkin_window(ledger: Doc, now: datetime) -> None:
    """Self check-in by code: from 30 minutes before the shift's start to its end."""
    opens = from_ms(ledger["starts_ms"]) - CHECKIN_OPENS_BEFORE
    if now < opens:
        raise Conflict(
            "checkin_not_open",
            f"check-in opens at {opens.isoformat()} (30 minutes before the start)",
            {"opens_at": opens.isoformat()},
        )
    if epoch_ms(now) >= int(ledger["ends_ms"]):
        raise Conflict("checkin_closed", "this shift has ended: check-in is closed")


def coordinator_time(ledger: Doc, at: datetime | None, now: datetime, grace: timedelta) -> int:
    """The moment a coordinator records (`at`, else now), within the shift's attendance window:
    from 30 minutes before its start to its end plus the grace, and not in the future."""
    moment = at or now
    if moment > now + CLOCK_SKEW:
        raise Refused("invalid_time", "at must not be in the future")
    opens = from_ms(ledger["starts_ms"]) - CHECKIN_OPENS_BEFORE
    closes = from_ms(ledger["ends_ms"]) + grace
    if not opens <= moment <= closes:
        raise Refused(
            "invalid_time",
            f"at must lie between {opens.isoformat()} and {closes.isoformat()}",
        )
    return epoch_ms(moment)


def attended_hours(starts_ms: int, ends_ms: int, in_ms: int, out_ms: int | None) -> float:
    """Check-in to check-out bounded by the shift (to its end without a check-out), in hours
    with two decimals; never negative."""
    begin = max(in_ms, starts_ms)
    end = min(out_ms if out_ms is not None else ends_ms, ends_ms)
    return round(max(0, end - begin) / 3_600_000, 2)


def ratio(part: float, whole: float) -> float | None:
    """part / whole with four decimals; None while the whole is 0 (undefined, not 0)."""
    return round(part / whole, 4) if whole else None


#: The kept counters of a shift's ledger, summed by reports and stats.
FIGURES = (
    "capacity",
    "confirmed",
    "waitlisted",
    "attended",
    "walk_ins",
    "no_shows",
    "hours_cs",
    "first_timers",
)


def figures(totals: Doc) -> Doc:
    """A report's figures from summed ledger counters (one shift, an activity or a window)."""
    number = {k: int(totals.get(k) or 0) for k in FIGURES}
    came = number["attended"] - number["walk_ins"]
    return {
        "capacity": number["capacity"],
        "confirmed": number["confirmed"],
        "waitlisted": number["waitlisted"],
        "attended": number["attended"],
        "no_shows": number["no_shows"],
        "walk_ins": number["walk_ins"],
        "fill_rate": ratio(number["confirmed"], number["capacity"]),
        # Of the members with a seat whose attendance is known, the share who did not come.
        "no_show_rate": ratio(number["no_shows"], number["no_shows"] + max(came, 0)),
        "hours": round(number["hours_cs"] / 100, 2),
        "first_time_attendees": number["first_timers"],
    }
