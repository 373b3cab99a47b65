"""The notifier's activities use cases on in-memory fakes (tests/fakes/notifier.py): runs of sign-up
events in a few writes, the current event's message only, redeliveries and late events changing
nothing, sign-ups that arrive before their activity, one cancellation message per member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.store import NotifierStore
from shared.events import (
    ActivityCancelled,
    ActivityChanged,
    ActivityPublished,
    CloudEvent,
    EventData,
    MemberJoined,
    SignedUp,
    SignUpChanged,
    new_event,
)
from tests.fakes.notifier import FakeNotifier, fake_notifier

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
START = NOW + timedelta(days=3)


def pair(data: EventData) -> tuple[CloudEvent, EventData]:
    return new_event(data), data


def at(f: FakeNotifier, moment: datetime) -> None:
    f.clock.offset = moment - datetime.now(UTC)


def published(**over: Any) -> ActivityPublished:
    shifts = [
        {
            "shift_id": f"s_{n}",
            "role": "planter",
            "starts_at": START + timedelta(days=n),
            "ends_at": START + timedelta(days=n, hours=4),
            "capacity": 5,
        }
        for n in range(2)
    ]
    fields = {**ActivityPublished.example, "shifts": shifts, "announce": False}
    return ActivityPublished.model_validate({**fields, **over})


def signup(n: int, status: str = "confirmed", shift: str = "s_0", **over: Any) -> SignedUp:
    fields = {"signup_id": f"su_{n}", "activity_id": "a_01", "shift_id": shift}
    return SignedUp.model_validate({**fields, "member_id": f"m_{n}", "status": status, **over})


def change(s: SignedUp, status: str, reason: str) -> SignUpChanged:
    return SignUpChanged.model_validate(
        {**s.model_dump(exclude={"position"}), "status": status, "reason": reason}
    )


async def community(f: FakeNotifier, n: int) -> None:
    joined = [
        MemberJoined.model_validate(
            {
                **MemberJoined.example,
                "member_id": f"m_{i}",
                "contacts": {"email": f"m{i}@example.org"},
                "timezone": "UTC",
                "welcome": False,
                "imported": True,
            }
        )
        for i in range(n)
    ]
    await f.handlers.on_members([pair(m) for m in joined])


async def inbox(f: FakeNotifier, member_id: str) -> list[str]:
    docs = await f.store.deliveries.find(
        {"member_id": {"$eq": member_id}, "channel": {"$eq": "inapp"}}
    ).to_list(None)
    return sorted(d["template"] for d in docs)


async def reminders(f: FakeNotifier, **flt: Any) -> list[dict[str, Any]]:
    return await f.store.reminders.find({k: {"$eq": v} for k, v in flt.items()}).to_list(None)


async def test_a_run_of_sign_ups_is_confirmed_and_planned_in_one_write_of_each_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 6)
    await f.handlers.on_activities([pair(published())])
    writes: list[int] = []
    original = NotifierStore.plan_reminders

    async def counted(self: NotifierStore, docs: list[dict[str, Any]]) -> None:
        writes.append(len(docs))
        await original(self, docs)

    monkeypatch.setattr(NotifierStore, "plan_reminders", counted)
    f.relay.forget()
    await f.handlers.on_activities([pair(signup(i)) for i in range(6)])
    assert writes == [12]  # two lead times for each of the six, in one bulk write
    assert f.relay.flushes == 1  # the six confirmations in one unit of work
    assert f.relay.types() == ["notification-sent"] * 6
    assert await inbox(f, "m_3") == ["signup_confirmed"]


async def test_signed_up_and_promoted_in_one_batch_is_told_the_promotion_only() -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 1)
    waiting = signup(0, "waitlisted", position=1)
    await f.handlers.on_activities(
        [pair(published()), pair(waiting), pair(change(waiting, "confirmed", "promoted"))]
    )
    assert await inbox(f, "m_0") == ["signup_promoted"]
    assert len(await reminders(f, signup_id="su_0", status="planned")) == 2


async def test_a_redelivered_run_and_a_late_older_event_change_nothing() -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 1)
    first = pair(signup(0))
    await f.handlers.on_activities([pair(published()), first])
    cancelled = pair(change(signup(0), "cancelled", "cancelled-by-member"))
    await f.handlers.on_activities([cancelled])
    assert [r["status"] for r in await reminders(f, signup_id="su_0")] == ["cancelled"] * 2
    # The old signed-up again (a redelivery after the cancellation): nothing comes back.
    await f.handlers.on_activities([first])
    assert (await f.store.signups_by_id(["su_0"]))["su_0"]["status"] == "cancelled"
    assert [r["status"] for r in await reminders(f, signup_id="su_0")] == ["cancelled"] * 2
    assert await inbox(f, "m_0") == ["signup_confirmed"]


async def test_a_signed_up_redelivered_after_a_change_of_the_same_millisecond_changes_nothing() -> (
    None
):
    f = fake_notifier()
    at(f, NOW)
    await community(f, 1)
    moment = datetime.now(UTC)  # both events stated at the same millisecond
    first = (new_event(signup(0), time=moment), signup(0))
    cancelled_data = change(signup(0), "cancelled", "cancelled-by-member")
    cancelled = (new_event(cancelled_data, time=moment), cancelled_data)
    await f.handlers.on_activities([pair(published()), first])
    await f.handlers.on_activities([cancelled])
    await f.handlers.on_activities([first])  # the older one, redelivered
    assert (await f.store.signups_by_id(["su_0"]))["su_0"]["status"] == "cancelled"
    assert [r["status"] for r in await reminders(f, signup_id="su_0")] == ["cancelled"] * 2


async def test_sign_ups_that_arrive_before_their_activity_are_reminded_once_it_does() -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 1)
    await f.handlers.on_activities([pair(signup(0))])
    assert await reminders(f, signup_id="su_0") == []
    await f.handlers.on_activities([pair(published())])
    assert len(await reminders(f, signup_id="su_0", status="planned")) == 2


async def test_a_member_on_two_shifts_is_told_of_the_cancellation_once() -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 2)
    two = [signup(0), signup(1, shift="s_1", member_id="m_0"), signup(2, member_id="m_1")]
    await f.handlers.on_activities([pair(published()), *(pair(s) for s in two)])
    cancelled = [pair(ActivityCancelled(activity_id="a_01", reason="storm"))]
    cancelled += [pair(change(s, "cancelled", "activity-cancelled")) for s in two]
    await f.handlers.on_activities(cancelled)
    assert (await inbox(f, "m_0")).count("activity_cancelled") == 1
    assert (await inbox(f, "m_1")).count("activity_cancelled") == 1
    assert await reminders(f, status="planned") == []


async def test_the_reminder_job_sends_a_batch_in_one_unit_of_work_and_nothing_twice() -> None:
    f = fake_notifier()
    at(f, NOW)
    await community(f, 3)
    await f.handlers.on_activities([pair(published()), *(pair(signup(i)) for i in range(3))])
    at(f, START - timedelta(hours=24) + timedelta(minutes=1))
    f.relay.forget()
    assert await f.notifier.reminders.run_due() == 3  # batches of two (the fake's fan-out)
    assert f.relay.flushes == 2
    assert await f.notifier.reminders.run_due() == 0
    assert [await inbox(f, f"m_{i}") for i in range(3)] == [
        ["activity_reminder", "signup_confirmed"]
    ] * 3


async def test_a_late_copy_of_activity_published_does_not_undo_a_change() -> None:
    f = fake_notifier()
    at(f, NOW)
    data = published()
    first = (new_event(data, time=NOW), data)
    moved = (START + timedelta(hours=1)).isoformat()
    shift = {"shift_id": "s_0", "starts_at": moved, "ends_at": moved}
    later = ActivityChanged(activity_id="a_01", changes={"location": "South", "shifts": [shift]})
    await f.handlers.on_activities([first, (new_event(later, time=NOW), later)])
    await f.handlers.on_activities([first])  # a redelivery after the change
    stored = await f.store.activity("a_01")
    assert stored is not None and stored["location"] == "South"
    assert stored["shifts"]["s_0"]["starts_ms"] == int(
        datetime.fromisoformat(moved).timestamp() * 1000
    )
