"""The activities' pure rules: shifts and changes, overlaps, check-in windows, the hours a
presence proves (hypothesis), the figures' rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.activities import domain, presence
from services.activities.domain import Conflict, NotFound, Refused, ShiftChange, ShiftTimes
from shared.clock import epoch_ms

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = 3_600_000


def _activity(status: str = "published") -> dict:
    shifts = {
        "s1": ShiftTimes("planter", NOW + timedelta(days=1), NOW + timedelta(days=1, hours=3), 5)
    }
    return domain.new_activity("a1", {"title": "Planting", "location": "gate"}, shifts, status, NOW)


def test_a_shift_must_end_after_it_starts_last_at_most_a_day_and_not_be_over():
    start = NOW + timedelta(hours=1)
    assert domain.check_shift("s", ShiftTimes("r", start, start + timedelta(hours=2), 1), NOW) == []
    assert "after starts_at" in domain.check_shift("s", ShiftTimes("r", start, start, 1), NOW)[0]
    long = ShiftTimes("r", start, start + timedelta(hours=24, seconds=1), 1)
    assert "at most 24 hours" in domain.check_shift("s", long, NOW)[0]
    over = ShiftTimes("r", NOW - timedelta(hours=3), NOW, 1)
    assert "already ended" in domain.check_shift("s", over, NOW)[0]
    with pytest.raises(Refused):
        domain.new_activity("a", {}, {"s": over}, "published", NOW)


def test_a_change_holds_the_new_values_only_and_a_changed_shift_whole():
    activity = _activity()
    moved = NOW + timedelta(days=2)
    change = domain.change(
        activity,
        {"title": "Planting", "location": "south gate"},
        [ShiftChange("s1", starts=moved, ends=moved + timedelta(hours=2))],
        None,
        NOW,
    )
    assert change.fields == {"location": "south gate"}
    assert set(change.changes) == {"location", "shifts"}
    (shift,) = change.changes["shifts"]
    assert shift["shift_id"] == "s1" and shift["capacity"] == 5 and shift["role"] == "planter"
    assert not change.publishes
    assert domain.change(activity, {"title": "Planting"}, [], None, NOW).empty


def test_a_change_is_refused_when_cancelled_back_to_draft_unknown_or_ended():
    with pytest.raises(Conflict, match="cancelled"):
        domain.change(_activity("cancelled"), {"title": "x"}, [], None, NOW)
    with pytest.raises(Conflict, match="draft"):
        domain.change(_activity(), {}, [], "draft", NOW)
    with pytest.raises(NotFound):
        domain.change(_activity(), {}, [ShiftChange("nope", capacity=3)], None, NOW)
    with pytest.raises(Conflict, match="ended"):
        domain.change(
            _activity(), {}, [ShiftChange("s1", capacity=3)], None, NOW + timedelta(days=2)
        )
    assert domain.change(_activity("draft"), {}, [], "published", NOW).publishes
    with pytest.raises(Conflict, match="ended"):
        domain.change(_activity("draft"), {}, [], "published", NOW + timedelta(days=2))


def test_back_to_back_shifts_do_not_overlap_and_the_overlap_names_the_other_sign_up():
    assert not domain.overlaps((0, 10), (10, 20))
    assert domain.overlaps((0, 11), (10, 20))
    others = [
        {"_id": "su1", "shift_id": "s1", "status": "confirmed", "starts_ms": 0, "ends_ms": 10},
        {"_id": "su2", "shift_id": "s2", "status": "cancelled", "starts_ms": 5, "ends_ms": 15},
        {"_id": "su3", "shift_id": "s3", "status": "waitlisted", "starts_ms": 12, "ends_ms": 30},
    ]
    assert domain.overlapping("s9", (10, 20), others)["_id"] == "su3"
    assert domain.overlapping("s3", (10, 20), others) is None  # the same shift is no overlap


def test_only_active_members_take_part():
    assert domain.active_member({"status": "active"}, "m")
    for member, code in ((None, "unknown_member"), ({"status": "erased"}, "unknown_member"),
                         ({"status": "left"}, "member_left")):  # fmt: skip
        with pytest.raises(Refused) as refused:
            domain.active_member(member, "m")
        assert refused.value.code == code


def test_self_check_in_opens_30_minutes_before_the_start_and_closes_at_the_end():
    ledger = {"starts_ms": epoch_ms(NOW), "ends_ms": epoch_ms(NOW + timedelta(hours=2))}
    with pytest.raises(Conflict, match="opens"):
        presence.self_checkin_window(ledger, NOW - timedelta(minutes=31))
    presence.self_checkin_window(ledger, NOW - timedelta(minutes=30))
    presence.self_checkin_window(ledger, NOW + timedelta(hours=1, minutes=59))
    with pytest.raises(Conflict, match="ended"):
        presence.self_checkin_window(ledger, NOW + timedelta(hours=2))


def test_a_coordinator_records_within_the_attendance_window_and_not_in_the_future():
    ledger = {"starts_ms": epoch_ms(NOW), "ends_ms": epoch_ms(NOW + timedelta(hours=2))}
    grace = timedelta(hours=1)
    later = NOW + timedelta(hours=5)
    assert presence.coordinator_time(ledger, None, NOW, grace) == epoch_ms(NOW)
    assert presence.coordinator_time(ledger, NOW + timedelta(hours=3), later, grace)
    for at, now in ((NOW + timedelta(hours=1), NOW), (NOW - timedelta(hours=1), later),
                    (NOW + timedelta(hours=3, seconds=1), later)):  # fmt: skip
        with pytest.raises(Refused):
            presence.coordinator_time(ledger, at, now, grace)


moments = st.integers(min_value=-48 * HOUR, max_value=48 * HOUR)


@given(
    start=moments,
    length=st.integers(min_value=1, max_value=24 * HOUR),
    checked_in=moments,
    out=st.one_of(st.none(), st.integers(min_value=0, max_value=48 * HOUR)),
)
def test_attended_hours_are_bounded_by_the_shift_and_never_negative(start, length, checked_in, out):
    end = start + length
    out_ms = None if out is None else checked_in + out
    hours = presence.attended_hours(start, end, checked_in, out_ms)
    assert 0 <= hours <= round(length / HOUR, 2) <= 24
    assert hours == round(hours, 2)
    # Without a check-out the hours run to the shift's end: never fewer than with one.
    assert presence.attended_hours(start, end, checked_in, None) >= hours
    if checked_in <= start and (out_ms is None or out_ms >= end):
        assert hours == round(length / HOUR, 2)  # there the whole shift


def test_attended_hours_examples():
    assert presence.attended_hours(0, 3 * HOUR, -HOUR, HOUR + HOUR // 2) == 1.5
    assert presence.attended_hours(0, 3 * HOUR, 10 * 60_000, None) == 2.83
    assert presence.attended_hours(0, 3 * HOUR, 4 * HOUR, None) == 0


def test_rates_are_none_without_a_whole_and_count_walk_ins_apart():
    figures = presence.figures({"capacity": 10, "confirmed": 8, "attended": 7, "walk_ins": 1,
                                "no_shows": 2, "hours_cs": 1234, "first_timers": 3})  # fmt: skip
    assert figures["fill_rate"] == 0.8
    assert figures["no_show_rate"] == 0.25  # 2 of the 8 with a seat whose attendance is known
    assert figures["hours"] == 12.34
    empty = presence.figures({})
    assert empty["fill_rate"] is None and empty["no_show_rate"] is None


def test_check_in_codes_use_unambiguous_characters_and_are_read_as_typed():
    code = domain.new_code()
    assert len(code) == domain.CODE_LENGTH and set(code) <= set(domain.CODE_ALPHABET)
    assert not set("01OIL") & set(domain.CODE_ALPHABET)
    assert domain.normalise_code(" ab3-k7q ") == "AB3K7Q"
