"""When a message may go, in the member's time zone: quiet hours, digests, budgets, retries."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE = "Europe/Moscow"


def zone(name: str | None) -> ZoneInfo:
    """The member's zone; an unknown or missing name falls back to the platform's default."""
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def local_date(at: datetime, tz: str | None) -> date:
    return at.astimezone(zone(tz)).date()


def _at_local(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time.

    A wall time that does not exist (the hour skipped when clocks go forward) is read with the
    offset before the change, which lands just after the gap; an ambiguous one (clocks go
    back) is its first occurrence. Either way the result is a real instant on that day.
    """
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local time when nothing is pushed; `start > end` spans midnight."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def quiet_until(now: datetime, tz: str | None, quiet: QuietHours | None) -> datetime | None:
    """When `now` falls in the member's quiet hours, the instant they end; otherwise None."""
    if quiet is None:
        return None
    zone_info = zone(tz)
    local = now.astimezone(zone_info)
    wall = local.time().replace(tzinfo=None)
    if not quiet.contains(wall):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and wall >= quiet.start:
        end_day += timedelta(days=1)  # the window started this evening and ends tomorrow
    end = _at_local(end_day, quiet.end, zone_info)
    if end <= now:  # only when a DST change folded the window: it is over already
        return None
    return end


def quiet_since(at: datetime, tz: str | None, quiet: QuietHours | None) -> datetime | None:
    """When `at` falls in the member's quiet hours, the instant that window began; else None."""
    if quiet is None:
        return None
    zone_info = zone(tz)
    local = at.astimezone(zone_info)
    wall = local.time().replace(tzinfo=None)
    if not quiet.contains(wall):
        return None
    start_day = local.date()
    if quiet.start > quiet.end and wall < quiet.end:
        start_day -= timedelta(days=1)  # the window started yesterday evening
    began = _at_local(start_day, quiet.start, zone_info)
    if began > at:  # only when a DST change folded the window
        return None
    return began


def earliest_send(now: datetime, tz: str | None, quiet: QuietHours | None) -> datetime:
    """The first instant at or after `now` outside quiet hours (deferred, never dropped)."""
    return quiet_until(now, tz, quiet) or now


def next_digest(now: datetime, tz: str | None, hour: int) -> tuple[datetime, date]:
    """The next digest time (local `hour`:00 strictly after now) and the local day it covers."""
    zone_info = zone(tz)
    day = now.astimezone(zone_info).date()
    at = _at_local(day, time(hour), zone_info)
    if at <= now:
        day += timedelta(days=1)
        at = _at_local(day, time(hour), zone_info)
    return at, day


def hour_slot(at: datetime) -> tuple[str, datetime]:
    """The rate-limit window holding `at` (a UTC hour) and when the next one starts."""
    start = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.strftime("%Y%m%d%H"), start + timedelta(hours=1)


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1`: exponential backoff with "equal jitter".

    Half of the exponential step is kept and the other half is random, so retries of many
    deliveries failing at once spread out instead of hitting the peer together. A peer's own
    `retry_after` (Telegram 429, HTTP Retry-After) is a floor, never shortened.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    jittered = step / 2 + (rng or random).uniform(0, step / 2)
    return max(jittered, retry_after or 0.0)
