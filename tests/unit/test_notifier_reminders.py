"""When reminders go (lead times, quiet hours, never after the start), across time zones, and
whether a due reminder still goes: the notifier's pure reminder rules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier import reminders
from services.notifier.reminders import plan, reminder_at, still_due
from services.notifier.timing import QuietHours, quiet_since, quiet_until
from shared.clock import epoch_ms
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
NIGHT = QuietHours(time(22), time(8))
H = timedelta(hours=1)


def at(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def times(result: list[reminders.ReminderTime]) -> dict[int, datetime | str | None]:
    return {r.lead_minutes: r.at or r.why for r in result}


def test_reminders_go_at_their_lead_times_before_the_start() -> None:
    start = at("Europe/Moscow", 2026, 12, 12, 15, 0)
    now = start - timedelta(days=3)
    assert times(plan(start, [1440, 120], now, "Europe/Moscow", NIGHT)) == {
        1440: start - timedelta(days=1),
        120: start - 2 * H,
    }


def test_a_sign_up_made_an_hour_before_the_start_gets_neither_reminder() -> None:
    start = at("Europe/Moscow", 2026, 12, 12, 15, 0)
    assert times(plan(start, [1440, 120], start - H, "Europe/Moscow", None)) == {
        1440: "missed",
        120: "missed",
    }
    # Three hours before: the 24-hour reminder is gone, the 2-hour one still goes.
    assert times(plan(start, [1440, 120], start - 3 * H, "Europe/Moscow", None)) == {
        1440: "missed",
        120: start - 2 * H,
    }


def test_a_reminder_in_quiet_hours_goes_when_they_end_if_that_is_before_the_start() -> None:
    # 2 h before a 09:00 shift is 07:00, inside 22:00-08:00: it goes at 08:00.
    start = at("Europe/Moscow", 2026, 12, 12, 9, 0)
    got = reminder_at(start, 2 * H, start - timedelta(days=2), "Europe/Moscow", NIGHT)
    assert got == (at("Europe/Moscow", 2026, 12, 12, 8, 0), None)


def test_a_reminder_whose_quiet_hours_last_past_the_start_goes_before_they_begin() -> None:
    # 2 h before a 07:00 shift is 05:00; quiet hours end at 08:00, after the start: it goes
    # in the last minute before they began, 21:59 the evening before.
    start = at("Europe/Moscow", 2026, 12, 12, 7, 0)
    got = reminder_at(start, 2 * H, start - timedelta(days=2), "Europe/Moscow", NIGHT)
    assert got == (at("Europe/Moscow", 2026, 12, 11, 21, 59), None)


def test_a_reminder_that_cannot_go_before_the_start_outside_quiet_hours_is_dropped() -> None:
    # Signed up at 23:00 (quiet already) for a 07:00 shift: no moment before the start is free.
    start = at("Europe/Moscow", 2026, 12, 12, 7, 0)
    now = at("Europe/Moscow", 2026, 12, 11, 23, 0)
    assert reminder_at(start, 2 * H, now, "Europe/Moscow", NIGHT) == (None, "quiet-hours")


def test_quiet_hours_are_the_members_own_across_zones() -> None:
    start = datetime(2026, 12, 12, 6, 0, tzinfo=UTC)  # 09:00 Moscow, 16:00 Vladivostok
    now = start - timedelta(days=2)
    # Moscow: 07:00 is quiet, 08:00 is the end. Vladivostok: 14:00 is not quiet.
    assert reminder_at(start, 2 * H, now, "Europe/Moscow", NIGHT)[0] == start - H
    assert reminder_at(start, 2 * H, now, "Asia/Vladivostok", NIGHT)[0] == start - 2 * H


def test_two_lead_times_moved_to_the_same_instant_send_one_reminder() -> None:
    start = at("Europe/Moscow", 2026, 12, 12, 8, 30)
    got = plan(start, [90, 60], start - timedelta(days=2), "Europe/Moscow", NIGHT)
    # 07:00 and 07:30 both wait for 08:00: the longer lead goes, the other is merged.
    assert times(got) == {90: at("Europe/Moscow", 2026, 12, 12, 8, 0), 60: "merged"}


def test_lead_times_of_zero_or_less_send_nothing() -> None:
    start = datetime(2026, 12, 12, 6, 0, tzinfo=UTC)
    assert plan(start, [0, -5], start - H * 48, "UTC", None) == []


@settings(max_examples=examples(400), deadline=None)
@given(
    start=moments,
    ahead=st.integers(min_value=0, max_value=4 * 24 * 60),
    lead=st.integers(min_value=1, max_value=3 * 24 * 60),
    zone=st.sampled_from(ZONES),
    quiet_start=wall_times,
    quiet_end=wall_times,
    with_quiet=st.booleans(),
)
def test_a_reminder_never_goes_in_quiet_hours_before_now_or_at_or_after_the_start(
    start: datetime,
    ahead: int,
    lead: int,
    zone: str,
    quiet_start: time,
    quiet_end: time,
    with_quiet: bool,
) -> None:
    quiet = QuietHours(quiet_start, quiet_end) if with_quiet else None
    now = start - timedelta(minutes=ahead)
    nominal = start - timedelta(minutes=lead)
    when, why = reminder_at(start, timedelta(minutes=lead), now, zone, quiet)
    if when is None:
        assert why in ("missed", "quiet-hours")
        if nominal >= now and quiet_until(nominal, zone, quiet) is None:
            raise AssertionError("a free lead time in the future was dropped")
        return
    assert now <= when < start
    assert quiet_until(when, zone, quiet) is None
    if quiet_until(nominal, zone, quiet) is None:
        assert when == nominal  # on time when its moment is free
    else:
        # Never later than the end of the quiet hours it fell in; earlier only to beat them.
        assert when <= quiet_until(nominal, zone, quiet)  # type: ignore[operator]
        assert when == quiet_until(nominal, zone, quiet) or when < nominal


@settings(max_examples=examples(300), deadline=None)
@given(moment=moments, zone=st.sampled_from(ZONES), a=wall_times, b=wall_times)
def test_quiet_hours_begin_at_or_before_a_moment_inside_them(
    moment: datetime, zone: str, a: time, b: time
) -> None:
    quiet = QuietHours(a, b)
    began = quiet_since(moment, zone, quiet)
    if quiet_until(moment, zone, quiet) is None:
        assert began is None or began <= moment
        return
    if began is not None:
        assert began <= moment
        assert moment - began <= timedelta(hours=25)


def test_the_reminder_id_names_sign_up_lead_time_and_start() -> None:
    start = datetime(2026, 12, 12, 6, 0, tzinfo=UTC)
    assert reminders.reminder_id("su_1", 120, start) == f"su_1:120:{epoch_ms(start)}"
    moved = start + H
    assert reminders.reminder_id("su_1", 120, moved) != reminders.reminder_id("su_1", 120, start)


def _due(starts: datetime) -> dict[str, object]:
    return {"_id": "r", "shift_id": "s_1", "starts_ms": epoch_ms(starts)}


def test_a_due_reminder_goes_only_for_a_confirmed_sign_up_of_a_live_unmoved_shift() -> None:
    start = datetime(2026, 12, 12, 6, 0, tzinfo=UTC)
    now = start - H
    activity = {"status": "published", "shifts": {"s_1": {"starts_ms": epoch_ms(start)}}}
    confirmed = {"status": "confirmed"}
    assert still_due(_due(start), confirmed, activity, now) is None
    assert still_due(_due(start), {"status": "cancelled"}, activity, now) == "cancelled"
    assert still_due(_due(start), {"status": "waitlisted"}, activity, now) == "cancelled"
    assert still_due(_due(start), None, activity, now) == "cancelled"
    assert still_due(_due(start), confirmed, {**activity, "status": "cancelled"}, now) == (
        "cancelled"
    )
    assert still_due(_due(start - H), confirmed, activity, now) == "cancelled"  # moved since
    assert still_due(_due(start), confirmed, activity, start) == "dropped"  # it started
