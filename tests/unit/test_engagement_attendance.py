"""Hours from attendance, on memory (no servers): an `attended` becomes one approved hours entry
per member and shift, with its hours-approved, scored like hours approved by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.engagement import attendance, usecases
from shared.events import ActivityChanged, ActivityPublished, Attended, EventData, new_event
from tests.fakes.engagement import OnMemory, engagement_on_memory

NOW = datetime(2026, 12, 12, 20, 0, tzinfo=UTC)
#: 22:30 UTC is already the next day in Moscow.
CHECK_IN = datetime(2026, 12, 11, 22, 30, tzinfo=UTC)


@pytest.fixture
async def e() -> OnMemory:
    on_memory = engagement_on_memory()
    await on_memory.store.ensure_indexes()
    for member in ("anna", "boris", "coordinator"):
        await on_memory.member(member, region="moscow")
    await on_memory.member("gone", status="erased")
    return on_memory


def attended(member: str = "anna", shift_id: str = "s1", hours: float = 3.5, **over) -> Attended:
    body = dict(
        signup_id=f"su_{member}_{shift_id}",
        activity_id="a1",
        shift_id=shift_id,
        member_id=member,
        checked_in_at=CHECK_IN,
        checked_out_at=CHECK_IN + timedelta(hours=hours),
        hours=hours,
        recorded_by="coordinator",
        walk_in=False,
    )
    body.update(over)
    return Attended(**body)


def published(title: str = "Tree planting in Bitsa park") -> ActivityPublished:
    return ActivityPublished(
        activity_id="a1",
        title=title,
        region="moscow",
        timezone="Europe/Moscow",
        organiser_id="coordinator",
        shifts=[
            {
                "shift_id": "s1",
                "role": "planter",
                "starts_at": CHECK_IN,
                "ends_at": CHECK_IN + timedelta(hours=4),
                "capacity": 12,
            }
        ],
    )


def batch(*items: EventData, at: datetime = NOW) -> list:
    return [(new_event(data, time=at), data) for data in items]


async def credit(e: OnMemory, events: list) -> int:
    return await e.hours.credit_attendance(events)


def approvals(e: OnMemory) -> list:
    return [ev for _, _, evs in e.relay.kicks for ev in evs or [] if ev.type == "hours-approved"]


# -- the rules -----------------------------------------------------------------------------------


def test_the_entry_of_an_attendance_is_approved_by_who_recorded_it_on_the_local_day():
    made = attendance.attendance_entry(
        attended(hours=3.456), {"title": "Tree planting", "timezone": "Europe/Moscow"}, NOW
    )
    assert made is not None
    entry, approved = made
    assert entry["_id"] == attendance.entry_id("s1", "anna")
    assert (entry["status"], entry["source"], entry["decided_by"]) == (
        "approved",
        "attendance",
        "coordinator",
    )
    assert (entry["hours"], entry["activity"], entry["date"]) == (
        3.46,
        "Tree planting",
        "2026-12-12",
    )
    assert entry["attendance"]["shift_id"] == "s1" and entry["attendance"]["walk_in"] is False
    assert (approved.entry_id, approved.hours, approved.approved_by) == (
        entry["_id"],
        3.46,
        "coordinator",
    )
    assert approved.date == date(2026, 12, 12)


def test_without_the_activitys_publication_the_entry_is_labelled_by_its_id_on_the_utc_day():
    made = attendance.attendance_entry(attended(), None, NOW)
    assert made is not None
    assert (made[0]["activity"], made[0]["date"]) == ("activity a1", "2026-12-11")
    odd_zone = attendance.attendance_entry(attended(), {"timezone": "Mars/Olympus"}, NOW)
    assert odd_zone is not None and odd_zone[0]["date"] == "2026-12-11"


def test_an_attendance_of_no_hours_credits_nothing():
    assert attendance.attendance_entry(attended(hours=0), None, NOW) is None
    assert attendance.attendance_entry(attended(hours=0.004), None, NOW) is None


def test_one_entry_per_member_and_shift():
    ids = {
        attendance.entry_id(shift, member) for shift in ("s1", "s2") for member in ("anna", "boris")
    }
    assert len(ids) == 4
    assert attendance.entry_id("s1", "anna") == attendance.entry_id("s1", "anna")


# -- the use case --------------------------------------------------------------------------------


async def test_an_attendance_becomes_one_approved_entry_with_one_hours_approved(e) -> None:
    first = batch(published(), attended())
    assert await credit(e, first) == 1
    assert await credit(e, first) == 0  # redelivered
    # A second attendance of the same member and shift (a correction) changes nothing.
    assert await credit(e, batch(attended(hours=4.0))) == 0
    [event] = approvals(e)
    entry = await e.store.hours_entry(attendance.entry_id("s1", "anna"))
    assert entry is not None and entry["hours"] == 3.5
    assert (entry["activity"], entry["date"]) == ("Tree planting in Bitsa park", "2026-12-12")
    assert event.payload().entry_id == entry["_id"] and event.subject == "anna"
    assert event.time == first[1][0].time  # approved when the attendance was recorded
    assert event.correlationid == first[1][0].correlationid
    listed = await e.store.hours_of("anna", "approved", 10, None)
    assert [d["_id"] for d in listed] == [entry["_id"]]


async def test_a_batch_credits_every_member_in_one_insert_and_each_shift_once(e) -> None:
    events = batch(
        attended("anna", "s1"), attended("boris", "s1", 2.0), attended("anna", "s1", 9.0),
        attended("anna", "s2", 1.25),
    )  # fmt: skip
    assert await credit(e, events) == 3
    totals = {m: await e.store.hours_totals(m) for m in ("anna", "boris")}
    assert totals == {"anna": {"approved": 4.75}, "boris": {"approved": 2.0}}
    assert len(approvals(e)) == 3
    # The same approvals again in a later batch: nothing new, nothing lost.
    assert await credit(e, events) == 0
    assert len(approvals(e)) == 3


async def test_an_unknown_member_waits_for_a_retry_and_an_erased_one_gets_nothing(e) -> None:
    with pytest.raises(usecases.MemberNotYetKnown):
        await credit(e, batch(attended("anna"), attended("ghost")))
    assert await e.store.hours.find_one({}) is None  # nothing written before the retry
    assert await credit(e, batch(attended("gone"))) == 0
    assert approvals(e) == []


async def test_the_newest_title_labels_the_entries_whatever_order_it_is_noted_in(e) -> None:
    renamed = ActivityChanged(activity_id="a1", changes={"title": "Planting, north gate"})
    await credit(e, batch(renamed, at=NOW))
    await credit(e, batch(published(), at=NOW - timedelta(days=1)))  # older, noted later
    await credit(e, batch(attended()))
    entry = await e.store.hours_entry(attendance.entry_id("s1", "anna"))
    assert entry is not None
    assert (entry["activity"], entry["date"]) == ("Planting, north gate", "2026-12-12")


async def test_hours_from_attendance_score_like_hours_approved_by_hand(e) -> None:
    await credit(e, batch(attended(hours=3.5)))
    [event] = approvals(e)
    scored = [(event, event.payload())]
    await e.at(NOW).activity.record(scored)
    await e.at(NOW).activity.record(scored)  # redelivered
    standing = (await e.store.standings(["anna"]))["anna"]
    assert (standing["points_total"], standing["hours_total"]) == (7, 3.5)
    assert standing["last_ms"] == int(event.time.timestamp() * 1000)
    assert standing["level"] == "participant"  # 7 points ≥ 5
