"""Windowed kept counters (shared/tally.py): whole hours from a moment on, exact across folds,
each change counted once, old hours and deltas dropped only when nothing can need them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store import epoch_ms
from shared.tally import HOUR_MS, RETAIN, Tally, first_whole_hour
from tests.fakes.memory import MemoryDatabase
from tests.properties import examples

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


def tally() -> Tally:
    return Tally(MemoryDatabase()["tallies"], "t", ("n", "h"), keep=timedelta(days=31))


def test_the_first_whole_hour_is_the_boundary_at_or_after() -> None:
    assert first_whole_hour(7 * HOUR_MS) == 7 * HOUR_MS
    assert first_whole_hour(7 * HOUR_MS + 1) == 8 * HOUR_MS


async def test_a_window_sums_the_whole_hours_from_its_start_and_a_change_counts_once() -> None:
    t = tally()
    hour = epoch_ms(NOW) // HOUR_MS * HOUR_MS
    at = NOW
    await t.add([
        t.delta("a", {"n": 1}, at, hour - 3 * HOUR_MS + 10),  # three hours ago
        t.delta("b", {"n": 1}, at, hour - 20 * HOUR_MS),  # the day before
        t.delta("c", {"n": 1, "h": 2.5}, at, hour + 5),  # this hour
        t.delta("c", {"n": 1, "h": 2.5}, at, hour + 5),  # the same change again: once
    ])  # fmt: skip
    three_hours, a_day = await t.windows([hour - 3 * HOUR_MS, hour - 24 * HOUR_MS])
    assert (three_hours["n"], three_hours["h"]) == (2, 2.5)
    assert a_day["n"] == 3
    # A start inside an hour leaves that hour to the caller (it counts it from its documents).
    (part,) = await t.windows([hour - 3 * HOUR_MS + 1])
    assert part["n"] == 1


moments = st.lists(
    st.tuples(st.integers(0, 40 * 24 * 60), st.integers(-1, 3), st.integers(0, 30)),
    max_size=40,
)


@settings(max_examples=examples(40), deadline=None)
@given(moments, st.lists(st.integers(1, 2 * 24 * 60), max_size=4), st.integers(0, 30 * 24))
async def test_folding_at_any_moment_changes_no_window(changes, folds, start_hours) -> None:
    """Changes recorded over time (each `minutes_ago` it happened, a count, minutes after
    NOW it was recorded) give the same windows of up to the kept 31 days whenever and however
    often the folds ran."""
    unfolded, folded = tally(), tally()
    for i, (minutes_ago, n, recorded) in enumerate(changes):
        happened = epoch_ms(NOW - timedelta(minutes=minutes_ago))
        for t in (unfolded, folded):
            await t.add([t.delta(f"k{i}", {"n": n}, NOW + timedelta(minutes=recorded), happened)])
    later = NOW + timedelta(days=2)
    for minutes in sorted(folds):
        await folded.fold(NOW + timedelta(minutes=minutes))
    await folded.fold(later)
    start = epoch_ms(later) // HOUR_MS * HOUR_MS - start_hours * HOUR_MS
    (a,), (b,) = await unfolded.windows([start]), await folded.windows([start])
    assert a["n"] == b["n"]
    assert (await unfolded.totals())["n"] == (await folded.totals())["n"]


async def test_hours_older_than_kept_and_deltas_older_than_retain_are_dropped() -> None:
    t = tally()
    old = epoch_ms(NOW - timedelta(days=40))
    await t.add([t.delta("old", {"n": 1}, NOW, old), t.delta("new", {"n": 1}, NOW, epoch_ms(NOW))])
    await t.fold(NOW + timedelta(hours=1))
    checkpoint = await t.collection.find_one({"_id": t.checkpoint_id})
    assert [int(h) for h in checkpoint["hours"]] == [epoch_ms(NOW) // HOUR_MS]
    # Folded deltas stay while the same change could be recorded again.
    await t.fold(NOW + timedelta(hours=2))
    assert await t.collection.find_one({"_id": "t:new"}) is not None
    await t.fold(NOW + RETAIN + timedelta(hours=3))
    await t.fold(NOW + RETAIN + timedelta(hours=4))
    assert await t.collection.find_one({"_id": "t:new"}) is None
    assert (await t.totals())["n"] == 2
