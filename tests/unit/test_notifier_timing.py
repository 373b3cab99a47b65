"""Quiet hours, digest times and retry delays, across midnight and time zones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.notifier.timing import (
    QuietHours,
    earliest_send,
    hour_slot,
    local_date,
    next_digest,
    quiet_until,
    retry_delay,
)
from tests.properties import examples

ZONES = [
    "Europe/Moscow",
    "Asia/Vladivostok",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "UTC",
    "America/Sao_Paulo",
]
moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
wall_times = st.times().map(lambda t: t.replace(second=0, microsecond=0))


def at(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_quiet_hours_across_midnight_end_the_next_morning() -> None:
    quiet = QuietHours(time(22), time(8))
    now = at("Europe/Moscow", 2026, 11, 27, 23, 30)
    assert quiet_until(now, "Europe/Moscow", quiet) == at("Europe/Moscow", 2026, 11, 28, 8, 0)
    early = at("Europe/Moscow", 2026, 11, 28, 3, 0)
    assert quiet_until(early, "Europe/Moscow", quiet) == at("Europe/Moscow", 2026, 11, 28, 8, 0)
    assert quiet_until(at("Europe/Moscow", 2026, 11, 28, 8, 0), "Europe/Moscow", quiet) is None
    assert quiet_until(at("Europe/Moscow", 2026, 11, 28, 21, 59), "Europe/Moscow", quiet) is None


def test_quiet_hours_are_the_members_own_local_time() -> None:
    quiet = QuietHours(time(22), time(8))
    now = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # 17:00 in Moscow, 00:00 in Vladivostok
    assert quiet_until(now, "Europe/Moscow", quiet) is None
    assert quiet_until(now, "Asia/Vladivostok", quiet) == at("Asia/Vladivostok", 2026, 11, 28, 8, 0)


def test_a_window_within_one_day_and_an_empty_window() -> None:
    lunch = QuietHours(time(13), time(14))
    assert quiet_until(at("UTC", 2026, 1, 1, 13, 30), "UTC", lunch) == at("UTC", 2026, 1, 1, 14, 0)
    assert quiet_until(at("UTC", 2026, 1, 1, 14, 30), "UTC", lunch) is None
    assert quiet_until(at("UTC", 2026, 1, 1, 3), "UTC", QuietHours(time(9), time(9))) is None
    assert quiet_until(at("UTC", 2026, 1, 1, 3), "UTC", None) is None


def test_an_unknown_zone_falls_back_to_moscow() -> None:
    quiet = QuietHours(time(22), time(8))
    now = at("Europe/Moscow", 2026, 11, 27, 23, 0)
    assert quiet_until(now, "Mars/Olympus", quiet) == quiet_until(now, "Europe/Moscow", quiet)


@settings(max_examples=examples(400), deadline=None)
@given(now=moments, zone=st.sampled_from(ZONES), start=wall_times, end=wall_times)
def test_deferred_never_dropped_and_never_inside_quiet_hours(
    now: datetime, zone: str, start: time, end: time
) -> None:
    quiet = QuietHours(start, end)
    send = earliest_send(now, zone, quiet)
    assert send >= now  # deferred, never earlier
    # At most a day (plus a DST hour) later: nothing waits for ever.
    assert send - now <= timedelta(hours=25)
    if send == now:
        local = now.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
        assert not quiet.contains(local) or quiet_until(now, zone, quiet) is None
    else:
        # It ends exactly at the local end time, unless DST skipped that wall time.
        ended = send.astimezone(ZoneInfo(zone)).time().replace(second=0, microsecond=0)
        assume(ended == end)
        assert not quiet.contains(ended)
        assert quiet_until(send, zone, quiet) is None


@settings(max_examples=examples(300), deadline=None)
@given(now=moments, zone=st.sampled_from(ZONES), hour=st.integers(0, 23))
def test_the_digest_goes_at_the_next_local_hour_within_a_day(
    now: datetime, zone: str, hour: int
) -> None:
    when, day = next_digest(now, zone, hour)
    assert now < when <= now + timedelta(hours=25)
    local = when.astimezone(ZoneInfo(zone))
    assert local.date() == day
    assume(local.hour == hour)  # DST can move a skipped hour
    if local.minute:
        # Only where hour:00 does not exist that day (Lord Howe's half-hour DST shift skips
        # 02:00-02:30): the digest goes at the first local time after it.
        wall = datetime.combine(day, datetime.min.time().replace(hour=hour), ZoneInfo(zone))
        assert wall.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None) != (
            wall.replace(tzinfo=None)
        )


def test_budget_days_turn_at_the_members_midnight() -> None:
    late = datetime(2026, 11, 27, 20, 30, tzinfo=UTC)  # 23:30 Moscow, 06:30 Vladivostok next day
    assert str(local_date(late, "Europe/Moscow")) == "2026-11-27"
    assert str(local_date(late, "Asia/Vladivostok")) == "2026-11-28"
    assert str(local_date(late + timedelta(hours=1), "Europe/Moscow")) == "2026-11-28"


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempt: int, seed: int) -> None:
    rng = random.Random(seed)
    delay = retry_delay(attempt, 2.0, 600.0, rng=rng)
    step = min(600.0, 2.0 * 2 ** (attempt - 1))
    assert step / 2 <= delay <= step


def test_backoff_never_undercuts_the_peers_retry_after() -> None:
    assert retry_delay(1, 0.1, 10, retry_after=7) == 7
    delays = {retry_delay(3, 1.0, 60) for _ in range(20)}
    assert len(delays) > 1  # jitter spreads retries out


def test_rate_windows_are_utc_hours() -> None:
    slot, next_start = hour_slot(datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC))
    assert slot == "2026112723"
    assert next_start == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
