"""The notifier's side of activities on real NATS, MongoDB and SMTP: announcements to an audience,
sign-up messages, reminders at their lead times (never after the start), changes and
cancellations told once to everyone signed up. The notifier's clock is moved, never slept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notifier.delivery_store import DeliveriesRepository
from services.notifier.store import NotifierStore
from shared.events import (
    ActivityCancelled,
    ActivityChanged,
    CampaignStarted,
    MemberUpdated,
)
from tests.helpers import wait_until
from tests.integration.activity_events import (
    activities_idle,
    activity,
    at_clock,
    changed,
    items,
    run_reminders,
    signed_up,
    wait_item,
)
from tests.integration.notifier_peers import MailRecorder, publish
from tests.integration.test_notifier_flows import (
    channels,
    inbox,
    joined,
    log,
    smtp,
    streams,
    telegram,
    wait_delivery,
    wait_for_member,
    webhook,
)

#: The flows' peers and settings, as fixtures (pytest finds them here by name).
FIXTURES = (channels, smtp, streams, telegram, webhook)
H = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
#: Only the test runs the reminder job (one run per call), unless it asks for the loop.
MANUAL = {"SARAFAN_NOTIFIER_REMINDER_SECONDS": 3600}


def noon(days: int = 2) -> datetime:
    """A fixed noon UTC some days ahead: no test straddles a budget day or a quiet window."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )


async def join_all(nc: Any, notifier: Any, *members: Any) -> None:
    for m in members:
        await publish(nc, m)
    for m in members:
        await wait_for_member(notifier, m.member_id)


async def idle(nc: Any, stream: str, consumer: str) -> bool:
    info = await nc.jetstream().consumer_info(stream, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def reminders_of(store: NotifierStore, signup_id: str) -> list[dict[str, Any]]:
    return await store.reminders.find({"signup_id": {"$eq": signup_id}}).to_list(None)


async def test_an_announcement_reaches_only_its_audience_with_consent_once_and_within_budget(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    async with services("notifier", SARAFAN_NOTIFIER_DAILY_BUDGET=1, **MANUAL, **channels) as s:
        notifier = s["notifier"].http
        at_clock(s, noon())
        # The notifier started before the activities service: it made its stream, as the
        # producer will.
        info = await nc.jetstream().stream_info("ACTIVITIES")
        assert info.config.subjects == ["activities.>"]

        def member(region: str, interests: list[str], **over: Any) -> Any:
            return joined(region=region, interests=interests, timezone="UTC", **over)

        anna = member("moscow", ["ecology"])
        eva = member("tver", ["Ecology", "animals"])  # her budget goes on a campaign first
        gleb = member("moscow", ["sports"])  # adds ecology later
        boris = member("moscow", ["ecology"], consent={"terms": True, "marketing": False})
        clara = member("kazan", ["ecology"])
        dan = member("moscow", ["sports"])
        fedor = member("moscow", ["ecology"], roles=["partner"])
        everyone = (anna, eva, gleb, boris, clara, dan, fedor)
        await join_all(nc, notifier, *everyone)
        await publish(
            nc,
            MemberUpdated(member_id=gleb.member_id, changes={"interests": ["sports", "ecology"]}),
        )
        now = noon()
        await publish(
            nc,
            CampaignStarted(
                campaign_id="c_tver",
                name="Тверь",
                kind="promotion",
                audience={"regions": ["tver"], "roles": []},
                starts_at=now,
                ends_at=now + timedelta(days=7),
                announcement={"ru": "Акция", "en": "Promo"},
            ),
        )
        await wait_delivery(notifier, eva.member_id, "email", template="campaign_announcement")

        act = activity(
            now + timedelta(days=3),
            audience={
                "regions": ["moscow", "tver"],
                "roles": ["volunteer", "coordinator"],
                "interests": ["ecology"],
            },
            announce=True,
        )
        event = await publish(nc, act)
        for m in (anna, gleb):
            await wait_delivery(notifier, m.member_id, "email", template="activity_announcement")
        told = await wait_item(notifier, eva.member_id, "activity_announcement")
        assert told["data"] == {"activity_id": act.activity_id}
        assert told["category"] == "activities"
        await activities_idle(nc)
        # Eva's budget was spent: the inbox has it, no e-mail.
        eva_mail = await log(notifier, member_id=eva.member_id, channel="email")
        assert sorted(i["template"] for i in eva_mail) == ["campaign_announcement", "welcome"]
        for m in (boris, clara, dan, fedor):
            assert await items(notifier, m.member_id, "activity_announcement") == []

        # The same activity published again (a redelivery under another id): nothing new.
        await publish(nc, act, msg_id=f"again-{event.id}")
        await activities_idle(nc)
        announced = [
            i
            for m in everyone
            for i in await log(notifier, member_id=m.member_id)
            if i["template"] == "activity_announcement"
        ]
        assert sorted((i["member_id"], i["channel"]) for i in announced) == sorted(
            [
                (anna.member_id, "email"),
                (anna.member_id, "inapp"),
                (gleb.member_id, "email"),
                (gleb.member_id, "inapp"),
                (eva.member_id, "inapp"),
            ]
        )
        subjects = [m["Subject"] for m in smtp.to(anna.contacts.email)]
        assert "Нужны добровольцы: Посадка деревьев" in subjects

        # An audience of an interest alone, anywhere: Eva's second interest.
        animals = activity(now + timedelta(days=4), audience={"interests": ["animals"]})
        await publish(nc, animals.model_copy(update={"announce": True}))
        await wait_item(notifier, eva.member_id, "activity_announcement")
        await activities_idle(nc)
        assert len(await items(notifier, eva.member_id, "activity_announcement")) == 2
        assert len(await items(notifier, anna.member_id, "activity_announcement")) == 1


async def test_a_sign_up_is_confirmed_in_the_members_zone_and_a_waitlisted_one_told_its_place(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    no_marketing = {"terms": True, "marketing": False}
    async with services("notifier", **MANUAL, **channels) as s:
        notifier = s["notifier"].http
        at_clock(s, noon())
        anna = joined(timezone="Asia/Vladivostok", consent=no_marketing)
        boris = joined(display_name="Boris", locale="en", timezone="UTC", consent=no_marketing)
        await join_all(nc, notifier, anna, boris)
        start = noon(5).replace(hour=3)
        act = activity(start, location="Битцевский парк, северный вход")
        mine, his = (
            signed_up(act, anna.member_id),
            signed_up(act, boris.member_id, "waitlisted", position=2),
        )
        for event in (act, mine, his):
            await publish(nc, event)

        confirmed = await wait_item(notifier, anna.member_id, "signup_confirmed")
        local = start.astimezone(ZoneInfo("Asia/Vladivostok"))
        assert confirmed["title"] == "Вы записаны: Посадка деревьев"
        assert confirmed["category"] == "signups"
        assert "вы записаны на «Посадка деревьев»: " in confirmed["body"]
        shown = f"{local:%H:%M}–{local + 4 * H:%H:%M} UTC+10, Битцевский парк, северный вход."
        assert shown in confirmed["body"]
        assert confirmed["data"] == {
            "signup_id": mine.signup_id,
            "activity_id": act.activity_id,
            "shift_id": mine.shift_id,
            "actions": {"cancel": f"DELETE /v1/signups/{mine.signup_id}"},
        }
        # Transactional: e-mailed without marketing consent.
        await wait_delivery(notifier, anna.member_id, "email", template="signup_confirmed")

        waitlisted = await wait_item(notifier, boris.member_id, "signup_waitlisted")
        assert "You're 2nd on the waitlist, with 1 person ahead of you." in waitlisted["body"]
        await publish(nc, changed(his, "confirmed", "promoted"))
        promoted = await wait_item(notifier, boris.member_id, "signup_promoted")
        assert promoted["title"] == "A place opened up: Посадка деревьев"
        assert f"{start:%H:%M}–{start + 4 * H:%H:%M} UTC" in promoted["body"]
        await wait_delivery(notifier, boris.member_id, "email", template="signup_promoted")

        # "I'm coming" needs no message; nor does the member's own cancellation.
        await publish(nc, changed(mine, "confirmed", "confirmed-by-member"))
        await activities_idle(nc)
        assert sorted(i["template"] for i in await inbox(notifier, anna.member_id)) == [
            "signup_confirmed",
            "welcome",
        ]


@pytest.mark.timeout(90)
async def test_reminders_go_at_their_lead_times_with_the_sign_up_and_never_for_a_late_lead(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    # The periodic job runs by itself here, every 0.2 s, at the notifier's clock.
    loop = {"SARAFAN_NOTIFIER_REMINDER_SECONDS": 0.2}
    async with services("notifier", **loop, **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        t0 = noon()
        at_clock(s, t0)
        anna, carl, dan = (joined(timezone="UTC") for _ in range(3))
        await join_all(nc, notifier, anna, carl, dan)
        start = t0 + timedelta(days=3)
        act = activity(start)
        early = signed_up(act, anna.member_id)
        await publish(nc, act)
        await publish(nc, early)
        await wait_item(notifier, anna.member_id, "signup_confirmed")
        planned = await reminders_of(store, early.signup_id)
        assert sorted(r["lead_minutes"] for r in planned) == [120, 1440]

        at_clock(s, start - 24 * H + MINUTE)
        reminder = await wait_item(notifier, anna.member_id, "activity_reminder")
        assert reminder["data"] == {
            "signup_id": early.signup_id,
            "activity_id": act.activity_id,
            "shift_id": early.shift_id,
            "actions": {
                "confirm": f"POST /v1/signups/{early.signup_id}/confirm",
                "cancel": f"DELETE /v1/signups/{early.signup_id}",
            },
        }
        await wait_delivery(notifier, anna.member_id, "email", template="activity_reminder")
        mail = smtp.to(anna.contacts.email)[-1].get_body(("plain",)).get_content()
        assert "«Я приду»" in mail and "«Не смогу»" in mail

        # Carl signs up three hours before: too late for the 24-hour reminder.
        at_clock(s, start - 3 * H)
        late = signed_up(act, carl.member_id)
        await publish(nc, late)
        await wait_item(notifier, carl.member_id, "signup_confirmed")
        assert [r["lead_minutes"] for r in await reminders_of(store, late.signup_id)] == [120]

        at_clock(s, start - 2 * H + MINUTE)
        for m in (anna, carl):

            async def two(member_id: str = m.member_id) -> bool:
                return len(await items(notifier, member_id, "activity_reminder")) == (
                    2 if member_id == anna.member_id else 1
                )

            await wait_until(two, message="the 2-hour reminders")

        # Dan signs up an hour before: confirmed, never reminded.
        at_clock(s, start - H)
        last = signed_up(act, dan.member_id)
        await publish(nc, last)
        await wait_item(notifier, dan.member_id, "signup_confirmed")
        assert await reminders_of(store, last.signup_id) == []
        at_clock(s, start + MINUTE)
        await run_reminders(s)
        assert await items(notifier, dan.member_id, "activity_reminder") == []
        assert len(await items(notifier, anna.member_id, "activity_reminder")) == 2
        statuses = [r["status"] for r in await reminders_of(store, early.signup_id)]
        assert statuses == ["sent", "sent"]


async def test_quiet_hours_that_would_push_a_reminder_past_the_start_drop_it(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    async with services("notifier", **MANUAL, **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        t0 = noon()
        at_clock(s, t0)
        vera, anna, olga = (joined(timezone="UTC") for _ in range(3))
        await join_all(nc, notifier, vera, anna, olga)

        async def quiet(member: Any, start: str, end: str) -> None:
            r = await notifier.put(
                f"/v1/members/{member.member_id}/preferences",
                json={"quiet_hours": {"start": start, "end": end}},
            )
            assert r.status_code == 200, r.text

        # Vera is in quiet hours now until 20:00; the shift starts at 15:00.
        await quiet(vera, "11:00", "20:00")
        start = t0 + 3 * H
        act = activity(start)
        signups = {m.member_id: signed_up(act, m.member_id) for m in (vera, anna, olga)}
        await publish(nc, act)
        for su in signups.values():
            await publish(nc, su)
        await activities_idle(nc)
        # 13:00 is quiet for Vera until 20:00, after the start, and 10:59 has passed: dropped.
        assert await reminders_of(store, signups[vera.member_id].signup_id) == []
        [anna_reminder] = await reminders_of(store, signups[anna.member_id].signup_id)
        assert anna_reminder["due_ms"] == int((start - 2 * H).timestamp() * 1000)
        # Olga turns quiet hours on after her reminder was planned: checked again when it goes.
        await quiet(olga, "12:30", "20:00")

        at_clock(s, start - 2 * H + MINUTE)
        assert await run_reminders(s) == 2
        await wait_delivery(notifier, anna.member_id, "email", template="activity_reminder")
        # Olga: the inbox only (a push would wait for 20:00, after the start).
        await wait_item(notifier, olga.member_id, "activity_reminder")
        olga_mail = await log(notifier, member_id=olga.member_id, channel="email")
        assert "activity_reminder" not in [i["template"] for i in olga_mail]
        assert await items(notifier, vera.member_id, "activity_reminder") == []

        at_clock(s, start + MINUTE)
        assert await run_reminders(s) == 0
        metrics = (await notifier.get("/metrics")).text
        assert 'sarafan_reminders_total{outcome="dropped",service="notifier"} 1.0' in metrics or (
            'sarafan_reminders_total{service="notifier",outcome="dropped"} 1.0' in metrics
        )
        assert 'outcome="expired"' in metrics


async def test_a_cancelled_sign_up_and_a_cancelled_activity_get_no_reminder(
    services: Any, nc: Any, streams: None, channels: dict[str, Any]
) -> None:
    async with services("notifier", **MANUAL, **channels) as s:
        notifier = s["notifier"].http
        t0 = noon()
        at_clock(s, t0)
        anna, boris, carl = (joined(timezone="UTC") for _ in range(3))
        await join_all(nc, notifier, anna, boris, carl)
        start = t0 + timedelta(days=2)
        first, second = activity(start), activity(start, title="Фудбанк")
        mine, his = signed_up(first, anna.member_id), signed_up(first, boris.member_id)
        carls = signed_up(second, carl.member_id)
        for event in (first, second, mine, his, carls):
            await publish(nc, event)
        await activities_idle(nc)
        await publish(nc, changed(mine, "cancelled", "cancelled-by-member"))
        await publish(nc, ActivityCancelled(activity_id=second.activity_id, reason="нет машины"))
        await wait_item(notifier, carl.member_id, "activity_cancelled")
        await activities_idle(nc)

        at_clock(s, start - 24 * H + MINUTE)
        # Only Boris's is due: Anna's and Carl's were cancelled with their sign-up, activity.
        assert await run_reminders(s) == 1
        await wait_item(notifier, boris.member_id, "activity_reminder")
        assert await items(notifier, anna.member_id, "activity_reminder") == []
        assert await items(notifier, carl.member_id, "activity_reminder") == []
        # Anna's own cancellation sent her nothing.
        assert "signup_cancelled" not in [
            i["template"] for i in await inbox(notifier, anna.member_id)
        ]


async def test_a_change_is_told_to_everyone_signed_up_once_and_moves_the_reminders(
    services: Any, nc: Any, streams: None, channels: dict[str, Any]
) -> None:
    async with services("notifier", **MANUAL, **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        t0 = noon()
        at_clock(s, t0)
        anna, boris, carl = (joined(timezone="UTC", locale="en") for _ in range(3))
        await join_all(nc, notifier, anna, boris, carl)
        start = t0 + timedelta(days=2)
        act = activity(start, start + 6 * H, location="North gate")
        mine = signed_up(act, anna.member_id)
        his = signed_up(act, boris.member_id, "waitlisted", position=1)
        carls = signed_up(act, carl.member_id, shift=1)
        for event in (act, mine, his, carls):
            await publish(nc, event)
        await activities_idle(nc)

        moved = start + timedelta(days=1)
        change = ActivityChanged(
            activity_id=act.activity_id,
            changes={
                "location": "South gate",
                "shifts": [
                    {
                        "shift_id": mine.shift_id,
                        "role": "planter",
                        "starts_at": moved.isoformat(),
                        "ends_at": (moved + 4 * H).isoformat(),
                        "capacity": 10,
                    }
                ],
            },
        )
        event = await publish(nc, change)
        for m in (anna, boris, carl):
            await wait_item(notifier, m.member_id, "activity_changed")
        await publish(nc, change, event=event, msg_id=f"again-{event.id}")  # a redelivery
        await activities_idle(nc)
        for m in (anna, boris):
            [told] = await items(notifier, m.member_id, "activity_changed")
            assert f"New time: {moved:%a, %-d %B, %H:%M}–{moved + 4 * H:%H:%M} UTC." in told["body"]
            assert "New place: South gate." in told["body"]
        [told] = await items(notifier, carl.member_id, "activity_changed")
        assert "New place: South gate." in told["body"] and "New time" not in told["body"]

        # Anna's reminders now follow the new time.
        planned = [r for r in await reminders_of(store, mine.signup_id) if r["status"] == "planned"]
        assert {r["starts_ms"] for r in planned} == {int(moved.timestamp() * 1000)}
        at_clock(s, start - 24 * H + MINUTE)
        await run_reminders(s)
        assert await items(notifier, anna.member_id, "activity_reminder") == []
        at_clock(s, moved - 24 * H + MINUTE)
        await run_reminders(s)
        reminder = await wait_item(notifier, anna.member_id, "activity_reminder")
        assert f"{moved:%H:%M}–{moved + 4 * H:%H:%M} UTC, South gate." in reminder["body"]

        # Cancelled: Carl's own sign-up-changed comes first, the others' after; each member
        # is told once, with the reason where it was known.
        await publish(nc, changed(carls, "cancelled", "activity-cancelled"))
        await wait_item(notifier, carl.member_id, "activity_cancelled")
        await publish(nc, ActivityCancelled(activity_id=act.activity_id, reason="storm warning"))
        for su in (mine, his):
            await publish(nc, changed(su, "cancelled", "activity-cancelled"))
        for m in (anna, boris):
            told = await wait_item(notifier, m.member_id, "activity_cancelled")
            assert "will not take place: storm warning." in told["body"]
        await activities_idle(nc)
        for m in (anna, boris, carl):
            assert len(await items(notifier, m.member_id, "activity_cancelled")) == 1
        at_clock(s, moved - 2 * H + MINUTE)
        await run_reminders(s)
        assert len(await items(notifier, anna.member_id, "activity_reminder")) == 1


SHIFT_SIZE = 2000


@pytest.mark.timeout(240)
async def test_a_shift_of_2000_is_reminded_in_batches_each_member_once(
    services: Any, nc: Any, streams: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: list[int] = []
    written: list[int] = []
    plan_reminders, insert_deliveries = (
        NotifierStore.plan_reminders,
        DeliveriesRepository.insert,
    )

    async def counted_plan(self: NotifierStore, docs: list[dict[str, Any]]) -> None:
        planned.append(len(docs))
        await plan_reminders(self, docs)

    def counted_insert(self: DeliveriesRepository, docs: list[Any], *a: Any, **k: Any) -> Any:
        written.append(len(docs))
        return insert_deliveries(self, docs, *a, **k)

    monkeypatch.setattr(NotifierStore, "plan_reminders", counted_plan)
    monkeypatch.setattr(DeliveriesRepository, "insert", counted_insert)
    members = [joined(timezone="UTC", imported=True, welcome=False) for _ in range(SHIFT_SIZE)]
    for chunk in range(0, len(members), 200):
        await asyncio.gather(*(publish(nc, m) for m in members[chunk : chunk + 200]))
    async with services("notifier", **MANUAL) as s:  # the community is projected first
        await wait_until(lambda: idle(nc, "MEMBERS", "notifier-members"), timeout=60)
    start = noon() + timedelta(days=2)
    act = activity(start)
    await publish(nc, act)
    signups = [signed_up(act, m.member_id) for m in members]
    for chunk in range(0, len(signups), 200):
        await asyncio.gather(*(publish(nc, su) for su in signups[chunk : chunk + 200]))
    written.clear()
    # The sign-ups wait in the stream, as after a busy hour: the notifier takes them in batches.
    async with services("notifier", **MANUAL) as s:
        store = s["notifier"].store
        await activities_idle(nc, timeout=120)
        # One bulk write of reminders per fetched batch of sign-ups, never one per sign-up.
        assert sum(planned) == 2 * SHIFT_SIZE and len(planned) <= SHIFT_SIZE // 80, planned
        assert len(written) <= SHIFT_SIZE // 80, written  # the confirmations, as many writes

        written.clear()
        at_clock(s, start - 24 * H + MINUTE)
        assert await run_reminders(s) == SHIFT_SIZE
        # Batches of SARAFAN_NOTIFIER_FANOUT_BATCH (1000): two bulk inserts for the shift.
        assert written == [1000, 1000], written
        sent = await store.deliveries.find(
            {"template": {"$eq": "activity_reminder"}}, {"member_id": 1}
        ).to_list(None)
        assert sorted(d["member_id"] for d in sent) == sorted(m.member_id for m in members)
        assert await run_reminders(s) == 0  # each reminder once


async def test_new_lead_times_replan_the_reminders_of_every_confirmed_member(
    services: Any, nc: Any, streams: None
) -> None:
    async with services("notifier", **MANUAL) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        t0 = noon()
        at_clock(s, t0)
        anna = joined(timezone="UTC")
        await join_all(nc, notifier, anna)
        start = t0 + timedelta(days=2)
        act = activity(start)
        mine = signed_up(act, anna.member_id)
        for event in (act, mine):
            await publish(nc, event)
        await activities_idle(nc)
        await publish(
            nc, ActivityChanged(activity_id=act.activity_id, changes={"reminders_minutes": [360]})
        )
        await activities_idle(nc)
        planned = await reminders_of(store, mine.signup_id)
        assert sorted((r["lead_minutes"], r["status"]) for r in planned) == [
            (120, "cancelled"),
            (360, "planned"),
            (1440, "cancelled"),
        ]
        at_clock(s, start - 24 * H + MINUTE)
        assert await run_reminders(s) == 0
        at_clock(s, start - 6 * H + MINUTE)
        assert await run_reminders(s) == 1
        await wait_item(notifier, anna.member_id, "activity_reminder")
