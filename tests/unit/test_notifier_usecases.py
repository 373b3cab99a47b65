"""The notifier's use cases on in-memory fakes (tests/fakes/notifier.py): no servers.

Each test drives a use case (or the handler the bus calls) and checks what it wrote and which
events its unit of work handed to the relay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier import usecases
from services.notifier.channels import Failed
from services.notifier.delivery_store import DeliveriesRepository
from services.notifier.domain import Preferences
from shared.events import (
    CampaignStarted,
    CloudEvent,
    CommentAdded,
    EventData,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    new_event,
)
from tests.fakes.notifier import FakeNotifier, ScriptedChannel, fake_notifier

LEFT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def joined(member_id: str, **over: Any) -> MemberJoined:
    fields: dict[str, Any] = {
        **MemberJoined.example,
        "member_id": member_id,
        "display_name": f"Member {member_id}",
        "contacts": {"email": f"{member_id}@example.org"},
        **over,
    }
    return MemberJoined.model_validate(fields)


def pair(data: EventData) -> tuple[CloudEvent, EventData]:
    return new_event(data), data


async def deliveries(f: FakeNotifier, **flt: Any) -> list[dict[str, Any]]:
    return await f.store.deliveries.find({k: {"$eq": v} for k, v in flt.items()}).to_list(None)


async def join(f: FakeNotifier, *members: MemberJoined) -> None:
    await f.handlers.on_members([pair(m) for m in members])


async def test_joined_members_are_projected_and_welcomed_in_one_unit_of_work() -> None:
    f = fake_notifier()
    quiet = joined("m_quiet", imported=True, welcome=False)
    await join(f, joined("m_1"), quiet, joined("m_2"))

    assert (await f.store.member("m_quiet"))["status"] == "active"  # projected all the same
    welcomes = await deliveries(f, channel="inapp")
    assert sorted(d["member_id"] for d in welcomes) == ["m_1", "m_2"]
    assert {d["template"] for d in welcomes} == {"welcome"}
    # One commit: one publishing round, each welcome with its notification-sent.
    assert f.relay.flushes == 1
    assert f.relay.types() == ["notification-sent", "notification-sent"]
    assert {e.data["notification_id"] for e in f.relay.published()} == {d["_id"] for d in welcomes}


async def test_a_join_handled_again_writes_no_second_welcome() -> None:
    f = fake_notifier()
    event, data = pair(joined("m_1"))
    await f.handlers.on_members([(event, data)])
    await f.handlers.on_members([(event, data)])  # the bus's one-by-one retry, a redelivery
    assert len(await deliveries(f, member_id="m_1")) == 1


async def test_a_new_address_unblocks_its_channel_and_an_unchanged_one_does_not() -> None:
    f = fake_notifier()
    await join(f, joined("m_1", contacts={"email": "old@example.org", "telegram": "@m1"}))
    uow = f.unit_of_work()
    uow.members.block_channel("m_1", "email", LEFT)
    uow.members.block_channel("m_1", "telegram", LEFT)
    await uow.commit()
    changes = {"contacts": {"email": "new@example.org", "telegram": "@m1"}, "region": "kazan"}
    await f.notifier.update_member(MemberUpdated(member_id="m_1", changes=changes))
    doc = await f.store.member("m_1")
    assert doc["contacts"] == {"email": "new@example.org", "phone": None, "telegram": "@m1"}
    assert doc["region"] == "kazan"
    assert set(doc["blocked"]) == {"telegram"}


async def test_an_update_of_an_erased_member_brings_nothing_back() -> None:
    f = fake_notifier()
    await join(f, joined("m_1"))
    await f.notifier.member_left(MemberLeft(member_id="m_1", erase=True, left_at=LEFT))
    await f.notifier.update_member(MemberUpdated(member_id="m_1", changes={"display_name": "Back"}))
    assert set(await f.store.member("m_1")) == {"_id", "status", "left_ms"}


async def test_erasure_forgets_the_member_and_erases_their_subjects() -> None:
    f = fake_notifier()
    await join(f, joined("m_1"), joined("m_2"))
    await f.handlers.on_members([pair(MemberLeft(member_id="m_1", erase=True, left_at=LEFT))])
    assert await f.store.member("m_1") == {
        "_id": "m_1",
        "status": "erased",
        "left_ms": 1795773600000,
    }
    assert await deliveries(f, member_id="m_1") == []
    assert len(await deliveries(f, member_id="m_2")) == 1
    assert f.bus.erased == [("NOTIFIER", "notifier.*.m_1")]


async def test_a_member_who_left_has_waiting_pushes_cancelled() -> None:
    f = fake_notifier(ScriptedChannel("email"))
    await join(f, joined("m_1"))
    [push] = await deliveries(f, channel="email")
    assert push["status"] == "pending"
    await f.notifier.member_left(MemberLeft(member_id="m_1", left_at=LEFT))
    [push] = await deliveries(f, channel="email")
    assert (push["status"], push["last_error"]) == ("cancelled", "member left")
    assert (await f.store.member("m_1"))["status"] == "left"


async def test_a_batch_of_engagement_events_is_projected_then_notified() -> None:
    f = fake_notifier()
    await join(f, joined("m_1", welcome=False), joined("m_2", welcome=False))
    comment = {**CommentAdded.example, "post_author_id": "m_1", "author_id": "m_2"}
    own = {**comment, "author_id": "m_1"}
    batch = [
        pair(LevelChanged(member_id="m_2", old_level="newcomer", new_level="participant", score=9)),
        pair(LevelChanged(member_id="m_2", old_level="participant", new_level="active", score=40)),
        pair(CommentAdded.model_validate(comment)),
        pair(CommentAdded.model_validate(own)),  # nobody is told about their own comment
    ]
    await f.handlers.on_engagement(batch)
    assert (await f.store.member("m_2"))["level"] == "active"  # the batch's last level
    assert [d["template"] for d in await deliveries(f, member_id="m_1")] == ["comment_added"]
    assert sorted(d["template"] for d in await deliveries(f, member_id="m_2")) == [
        "level_up",
        "level_up",
    ]
    assert f.relay.flushes == 1  # every listed notice of the batch in one unit of work


async def test_a_campaign_reaches_only_its_consenting_audience_batch_by_batch() -> None:
    f = fake_notifier()
    no = {"terms": True, "marketing": False}
    members = [joined(f"m_{n}", welcome=False) for n in range(5)]
    await join(f, *members, joined("m_no", welcome=False, consent=no))
    await join(f, joined("m_far", welcome=False, region="kazan"))
    now = datetime.now(UTC)
    campaign = CampaignStarted.model_validate(
        {
            **CampaignStarted.example,
            "audience": {"regions": ["moscow"]},
            "starts_at": now,
            "ends_at": now + timedelta(days=3),
        }
    )
    await f.handlers.on_campaigns([pair(campaign)])
    got = sorted(d["member_id"] for d in await deliveries(f, template="campaign_announcement"))
    assert got == [m.member_id for m in members]
    assert f.relay.flushes == 3  # fan-out batches of 2: one unit of work each


async def test_member_events_are_refused_by_the_notice_path() -> None:
    f = fake_notifier()
    with pytest.raises(ValueError):
        await f.notifier.notify([pair(joined("m_1"))])


async def test_preferences_of_an_unknown_member_are_not_found_and_a_members_are_kept() -> None:
    f = fake_notifier()
    with pytest.raises(usecases.MemberNotFound):
        await f.notifier.preferences("m_nobody")
    await join(f, joined("m_1", welcome=False))
    assert await f.notifier.preferences("m_1") == Preferences()
    chosen = Preferences.model_validate({"channels": ["email"], "digest_hour": 9})
    assert await f.notifier.set_preferences("m_1", chosen) == chosen
    assert await f.notifier.preferences("m_1") == chosen


async def test_the_inbox_renders_names_as_the_projection_has_them_now() -> None:
    f = fake_notifier()
    await join(f, joined("m_1", welcome=False, locale="en"), joined("m_2", welcome=False))
    comment = {**CommentAdded.example, "post_author_id": "m_1", "author_id": "m_2"}
    await f.handlers.on_engagement([pair(CommentAdded.model_validate(comment))])
    page = await f.notifier.inbox("m_1", 10, None)
    [doc] = page.docs
    assert "Member m_2" in " ".join(page.text(doc))
    await f.notifier.member_left(MemberLeft(member_id="m_2", erase=True, left_at=LEFT))
    page = await f.notifier.inbox("m_1", 10, None)
    assert "Member m_2" not in " ".join(page.text(page.docs[0]))


async def test_a_sent_push_is_delivered_and_announced_with_its_batch() -> None:
    email = ScriptedChannel("email")
    f = fake_notifier(email)
    await join(f, joined("m_1"), joined("m_2"))
    f.relay.forget()
    assert await f.dispatcher.run_once() == 2
    assert sorted(m.address for m in email.sent) == ["m_1@example.org", "m_2@example.org"]
    assert {d["status"] for d in await deliveries(f, channel="email")} == {"delivered"}
    assert f.relay.types() == ["notification-sent", "notification-sent"]
    assert f.relay.flushes == 1  # the claimed batch is one unit of work


async def test_a_dead_address_fails_blocks_the_channel_and_falls_back() -> None:
    email = ScriptedChannel("email", [Failed("550 m_1@example.org: no such user", True)])
    telegram = ScriptedChannel("telegram")
    f = fake_notifier(email, telegram)
    await join(f, joined("m_1", contacts={"email": "m_1@example.org", "telegram": "42"}))
    await f.notifier.set_preferences(
        "m_1", Preferences.model_validate({"channels": ["email", "telegram"]})
    )
    await f.store.deliveries.delete_many({})
    await join(f, joined("m_1", contacts={"email": "m_1@example.org", "telegram": "42"}))
    f.relay.forget()
    await f.dispatcher.run_once()
    [failed] = await deliveries(f, channel="email")
    assert failed["status"] == "failed" and failed["fallback"] == "telegram"
    assert failed["last_error"] == "550 <address>: no such user"
    assert set((await f.store.member("m_1"))["blocked"]) == {"email"}
    assert f.relay.types() == ["notification-failed"]
    await f.dispatcher.run_once()
    [fallback] = await deliveries(f, channel="telegram")
    assert (fallback["status"], fallback["fallback_from"]) == ("delivered", failed["_id"])
    assert [m.address for m in telegram.sent] == ["42"]


@pytest.mark.parametrize("steps", [0, 1, 2])
async def test_a_dispatcher_loop_woken_just_as_it_is_stopped_still_stops(steps: int) -> None:
    """Python 3.11's wait_for swallows a cancellation that arrives with the wake-up: a service
    would then wait for ever for its dispatcher to stop."""
    import asyncio

    from shared.clock import woken_or_timeout

    wake = asyncio.Event()

    async def loop() -> None:
        while True:
            await woken_or_timeout(wake, 10)
            wake.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    wake.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_a_fan_out_that_fails_after_staging_its_deliveries_writes_none_and_announces_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = fake_notifier()
    stage = DeliveriesRepository.insert

    def staged_then_crash(*args: Any, **kwargs: Any) -> Any:
        stage(*args, **kwargs)
        raise RuntimeError("the process fails between staging and commit")

    monkeypatch.setattr(DeliveriesRepository, "insert", staged_then_crash)
    with pytest.raises(RuntimeError):
        await join(f, joined("m_1"), joined("m_2"))
    # The unit of work dropped what was staged: no welcome, no batch, nothing to publish.
    assert await deliveries(f) == []
    assert f.db["outbox_batches"].documents() == []
    assert f.relay.kicks == [] and f.relay.published() == []
    monkeypatch.undo()
    await join(f, joined("m_1"), joined("m_2"))  # the redelivery welcomes them, once each
    assert sorted(d["member_id"] for d in await deliveries(f)) == ["m_1", "m_2"]
    assert f.relay.types() == ["notification-sent", "notification-sent"]
