"""The notifier end to end: real NATS, MongoDB, SMTP, webhook receiver and Telegram peers."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from shared.events import (
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CommentAdded,
    LevelChanged,
    MemberDrifting,
    MemberJoined,
    MilestoneReached,
    QuestionUnanswered,
)
from tests.helpers import wait_until
from tests.integration.conftest import join_body
from tests.integration.notifier_peers import (
    BOT_TOKEN,
    WEBHOOK_SECRET,
    FakeTelegram,
    MailRecorder,
    WebhookReceiver,
    create_streams,
    publish,
    serve,
    smtp_server,
)


@pytest.fixture
def smtp() -> Iterator[MailRecorder]:
    with smtp_server() as recorder:
        yield recorder


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    async with serve(receiver) as url:
        receiver.url = url + "/hooks/sarafan"
        yield receiver


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    async with serve(fake) as url:
        fake.url = url
        yield fake


@pytest.fixture
def channels(
    smtp: MailRecorder, webhook: WebhookReceiver, telegram: FakeTelegram
) -> dict[str, Any]:
    """Settings turning every channel on against the local peers; quick retries for tests."""
    return {
        "SMTP_URL": smtp.url,  # type: ignore[attr-defined]
        "WEBHOOK_URL": webhook.url,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TELEGRAM_API_URL": telegram.url,
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1,
        "SARAFAN_NOTIFIER_RETRY_BASE_SECONDS": 0.1,
        "SARAFAN_NOTIFIER_MAX_ATTEMPTS": 3,
    }


@pytest.fixture
async def streams(nc: Any) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")


def joined(member_id: str | None = None, **over: Any) -> MemberJoined:
    fields: dict[str, Any] = {
        "member_id": member_id or f"m_{uuid.uuid4().hex[:10]}",
        "display_name": "Anna",
        "region": "moscow",
        "roles": ["volunteer"],
        "locale": "ru",
        "timezone": "Europe/Moscow",
        "contacts": {"email": f"{uuid.uuid4().hex[:8]}@example.org"},
        "consent": {"terms": True, "marketing": True},
        "joined_at": datetime.now(UTC),
    }
    fields.update(over)
    return MemberJoined(**fields)


def move_clock(running: Any, to: datetime) -> None:
    """Set the notifier's clock, so a test about hourly or daily windows straddles none."""
    running["notifier"].clock.offset = to - datetime.now(UTC)


def next_utc_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


async def inbox(notifier: Any, member_id: str) -> list[dict[str, Any]]:
    r = await notifier.get(f"/v1/members/{member_id}/inbox")
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def log(notifier: Any, **params: Any) -> list[dict[str, Any]]:
    r = await notifier.get("/v1/notifications", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def templates_in_inbox(notifier: Any, member_id: str) -> list[str]:
    return sorted(i["template"] for i in await inbox(notifier, member_id))


async def wait_for_member(notifier: Any, member_id: str) -> None:
    async def known() -> bool:
        return (await notifier.get(f"/v1/members/{member_id}/preferences")).status_code == 200

    await wait_until(known, message=f"{member_id} never reached the notifier's projection")


async def wait_delivery(
    notifier: Any,
    member_id: str,
    channel: str,
    status: str = "delivered",
    template: str | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        for item in await log(notifier, member_id=member_id, channel=channel):
            if item["status"] == status and template in (None, item["template"]):
                return item
        return None

    return await wait_until(
        found, timeout=timeout, message=f"no {status} {template or ''} {channel} delivery"
    )


async def test_each_message_kind_reaches_the_right_members_on_the_right_channels(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
    webhook: WebhookReceiver,
    telegram: FakeTelegram,
) -> None:
    async with services("members", "notifier", SARAFAN_NOTIFIER_DAILY_BUDGET=50, **channels) as s:
        members, notifier = s["members"].http, s["notifier"].http

        async def join(**over: Any) -> dict[str, Any]:
            r = await members.post("/v1/members", json=join_body(**over))
            assert r.status_code == 201, r.text
            return r.json()

        anna = await join(display_name="Анна", email="anna@example.org")  # ru, e-mail
        ben = await join(
            display_name="Ben",
            email=None,
            telegram="ben_tg",
            locale="en",
            consent={"terms": True, "marketing": False},
        )  # Telegram, no marketing
        olga = await join(display_name="Ольга", email="olga@example.org", roles=["coordinator"])
        dan = await join(
            display_name="Dan",
            email=None,
            phone="+79990000001",
            locale="en",
            region="kazan",
            referral_code=anna["referral_code"],
        )  # webhook only
        a, b, o, d = (m["member_id"] for m in (anna, ben, olga, dan))
        for mid in (a, b, o, d):
            await wait_for_member(notifier, mid)

        post = "p_1"
        await publish(
            nc, LevelChanged(member_id=a, old_level="newcomer", new_level="participant", score=12)
        )
        await publish(
            nc, LevelChanged(member_id=b, old_level="active", new_level="participant", score=9)
        )  # a step down: no message
        await publish(
            nc,
            CommentAdded(
                comment_id="c1",
                post_id=post,
                author_id=b,
                post_author_id=a,
                created_at=datetime.now(UTC),
            ),
        )
        await publish(
            nc,
            CommentAdded(
                comment_id="c2",
                post_id=post,
                author_id=a,
                post_author_id=a,
                created_at=datetime.now(UTC),
            ),
        )
        await publish(
            nc,
            AnswerAccepted(
                post_id=post, comment_id="c1", asker_id=a, answerer_id=b, seconds_to_answer=290
            ),
        )
        await publish(
            nc,
            MemberDrifting(
                member_id=b, level="active", last_active_at=datetime.now(UTC), days_inactive=21
            ),
        )
        await publish(
            nc, QuestionUnanswered(post_id="p_2", asker_id=a, region="moscow", hours_open=25)
        )
        now = datetime.now(UTC)
        await publish(
            nc,
            CampaignStarted(
                campaign_id="c_spring",
                name="Весенняя уборка",
                kind="challenge",
                audience={"regions": ["moscow"], "roles": []},
                starts_at=now,
                ends_at=now + timedelta(days=30),
                announcement={"ru": "Выходим на субботник!", "en": "Join the clean-up!"},
            ),
        )
        await publish(
            nc, MilestoneReached(campaign_id="c_spring", member_id=a, milestone=50, points=52)
        )
        await publish(
            nc,
            CampaignEnded(
                campaign_id="c_spring",
                participants=3,
                winners=[
                    {"member_id": b, "rank": 1, "points": 120},
                    {"member_id": a, "rank": 2, "points": 52},
                ],
            ),
        )

        expected = {
            a: [
                "answer_accepted",
                "campaign_announcement",
                "campaign_winner",
                "comment_added",
                "level_up",
                "milestone_reached",
                "referral_thanks",
                "welcome",
            ],
            b: ["answer_thanks", "campaign_winner", "drifting_invite", "welcome"],
            o: ["campaign_announcement", "question_unanswered", "welcome"],
            d: ["welcome"],
        }
        for mid, templates in expected.items():

            async def complete(mid: str = mid, templates: list[str] = templates) -> bool:
                return await templates_in_inbox(notifier, mid) == templates

            await wait_until(complete, message=f"inbox of {mid}")

        # Each pushed message went to the member's one usable channel, and only there.
        async def all_pushed() -> bool:
            pending = [
                i
                for i in await log(notifier)
                if i["channel"] != "inapp" and i["status"] != "delivered"
            ]
            return not pending and len(smtp.messages) == 11

        await wait_until(all_pushed, message="pushed messages")
        assert sorted(m["Subject"] for m in smtp.to("anna@example.org")) == sorted(
            [
                "Анна, добро пожаловать в сообщество!",
                "Спасибо, что привели друга!",
                "Новый уровень: участник!",
                "Новый комментарий к вашему вопросу",
                "Ваш вопрос решён",
                "Новая кампания: Весенняя уборка",
                "Рубеж пройден: 50 баллов!",
                "Вы среди победителей!",
            ]
        )
        assert sorted(m["Subject"] for m in smtp.to("olga@example.org")) == sorted(
            [
                "Ольга, добро пожаловать в сообщество!",
                "Вопрос без ответа в регионе moscow",
                "Новая кампания: Весенняя уборка",
            ]
        )
        texts = [c["text"] for c in telegram.delivered("@ben_tg")]
        assert len(texts) == 4 and all(t.split("\n")[0] for t in texts)
        assert any(t.startswith("Your answer was accepted!") for t in texts)
        assert any("21 days" in t for t in texts)
        assert [r["payload"]["data"]["template"] for r in webhook.delivered(d)] == ["welcome"]
        assert webhook.rejected == 0
        milestone = next(
            i for i in await inbox(notifier, a) if i["template"] == "milestone_reached"
        )
        assert "52 балла" in milestone["body"]

        # notification-sent for every delivery, on the NOTIFIER stream.
        deliveries = await log(notifier)
        js = nc.jetstream()

        async def all_announced() -> bool:
            return (await js.stream_info("NOTIFIER")).state.messages == len(deliveries)

        await wait_until(all_announced, message="notification-sent for each delivery")


async def _collect(into: list[dict[str, Any]], msg: Any) -> None:
    into.append(json.loads(msg.data))


async def test_quiet_hours_defer_pushed_messages_until_they_end(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
) -> None:
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(timezone="Asia/Vladivostok")
        await publish(nc, member)
        await wait_delivery(notifier, member.member_id, "email", template="welcome")
        local = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Vladivostok"))
        start, end = (
            (local - timedelta(hours=1)).strftime("%H:%M"),
            (local + timedelta(hours=2)).strftime("%H:%M"),
        )
        r = await notifier.put(
            f"/v1/members/{member.member_id}/preferences",
            json={"quiet_hours": {"start": start, "end": end}},
        )
        assert r.status_code == 200, r.text

        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="newcomer", new_level="participant", score=10
            ),
        )
        waiting = await wait_delivery(notifier, member.member_id, "email", status="deferred")
        assert waiting["deferred"] == "quiet-hours"
        due = datetime.fromisoformat(waiting["due_at"])
        assert timedelta(hours=1, minutes=58) < due - datetime.now(UTC) <= timedelta(hours=2)
        assert "level_up" in await templates_in_inbox(notifier, member.member_id)  # inbox at once
        assert len(smtp.to(member.contacts.email)) == 1  # only the welcome

        s["notifier"].clock.offset = timedelta(hours=2, minutes=1)
        s["notifier"].jobs.dispatcher.wake()
        await wait_delivery(notifier, member.member_id, "email", template="level_up")
        assert [m["Subject"] for m in smtp.to(member.contacts.email)][-1].startswith(
            "Новый уровень"
        )


async def test_daily_budget_caps_pushed_messages_across_campaigns(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
) -> None:
    async with services("notifier", SARAFAN_NOTIFIER_DAILY_BUDGET=2, **channels) as s:
        notifier = s["notifier"].http
        move_clock(s, next_utc_hour().replace(hour=12) + timedelta(days=1))  # one budget day
        member = joined(timezone="UTC")
        await publish(nc, member)
        await wait_delivery(notifier, member.member_id, "email", template="welcome")
        now = datetime.now(UTC)
        for n in range(3):
            await publish(
                nc,
                CampaignStarted(
                    campaign_id=f"c_{n}",
                    name=f"Campaign {n}",
                    kind="promotion",
                    audience={"regions": [], "roles": []},
                    starts_at=now,
                    ends_at=now,
                    announcement={"ru": "Акция", "en": "Promo"},
                ),
            )

        async def three_in_inbox() -> bool:
            items = await templates_in_inbox(notifier, member.member_id)
            return items.count("campaign_announcement") == 3

        await wait_until(three_in_inbox, message="every announcement reaches the inbox")

        async def two_mailed() -> bool:
            return len(smtp.to(member.contacts.email)) == 3  # the welcome (urgent) + 2

        await wait_until(two_mailed)
        emails = await log(notifier, member_id=member.member_id, channel="email")
        assert sorted(i["template"] for i in emails) == [
            "campaign_announcement",
            "campaign_announcement",
            "welcome",
        ]


async def test_telegram_429_is_retried_after_retry_after_then_delivered(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    telegram: FakeTelegram,
) -> None:
    telegram.script["@slow_one"] = [429, 200]
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"telegram": "slow_one"})
        await publish(nc, member)
        done = await wait_delivery(notifier, member.member_id, "telegram", timeout=15)
        assert done["attempts"] == 2
        first, second = telegram.calls
        assert (first["status"], second["status"]) == (429, 200)
        assert second["at"] - first["at"] >= telegram.retry_after * 0.95
        assert len(telegram.delivered("@slow_one")) == 1


async def test_telegram_403_falls_back_to_email_and_the_bot_is_not_tried_again(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    telegram: FakeTelegram,
    smtp: MailRecorder,
) -> None:
    telegram.blocked.add("@blocker")
    failed: list[dict[str, Any]] = []
    sub = await nc.subscribe("notifier.notification-failed.*", cb=partial(_collect, failed))
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"telegram": "blocker", "email": "blocker@example.org"})
        await publish(nc, member)
        tg = await wait_delivery(notifier, member.member_id, "telegram", status="failed")
        assert tg["fallback"] == "email" and "blocked" in tg["last_error"]
        mail = await wait_delivery(notifier, member.member_id, "email")
        assert mail["fallback_from"] == tg["notification_id"]
        assert [m["Subject"] for m in smtp.to("blocker@example.org")] == [
            "Anna, добро пожаловать в сообщество!"
        ]
        await wait_until(lambda: failed, message="notification-failed")
        assert failed[0]["data"]["channel"] == "telegram"
        assert failed[0]["data"]["notification_id"] == tg["notification_id"]

        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="newcomer", new_level="participant", score=10
            ),
        )
        await wait_delivery(notifier, member.member_id, "email", template="level_up")
        assert len(telegram.calls) == 1  # blocked bots are not knocked on again
    await sub.unsubscribe()


async def test_webhook_is_signed_and_keeps_its_id_across_retries(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    webhook: WebhookReceiver,
) -> None:
    webhook.answers = [503, 200]
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"phone": "+79990000002"})
        await publish(nc, member)
        done = await wait_delivery(notifier, member.member_id, "webhook")
        assert done["attempts"] == 2
        assert [r["status"] for r in webhook.received] == [503, 200]
        assert {r["id"] for r in webhook.received} == {done["notification_id"]}
        assert webhook.rejected == 0
        payload = webhook.received[-1]["payload"]
        assert payload["type"] == "notification.welcome"
        assert payload["data"]["member_id"] == member.member_id


async def test_transient_failures_end_in_notification_failed_after_the_last_attempt(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    webhook: WebhookReceiver,
) -> None:
    webhook.answers = [500, 500, 500]
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"phone": "+79990000003"})
        await publish(nc, member)
        failed = await wait_delivery(notifier, member.member_id, "webhook", status="failed")
        assert failed["attempts"] == 3 and "500" in failed["last_error"]
        assert failed["fallback"] is None  # no other channel: the inbox has it
        assert await templates_in_inbox(notifier, member.member_id) == ["welcome"]


async def test_bounced_address_falls_back_to_the_next_channel(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
    webhook: WebhookReceiver,
) -> None:
    smtp.bounce.add("gone@example.org")
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"email": "gone@example.org"})
        await publish(nc, member)
        failed = await wait_delivery(notifier, member.member_id, "email", status="failed")
        assert failed["attempts"] == 1 and "550" in failed["last_error"]
        await wait_delivery(notifier, member.member_id, "webhook")
        assert len(webhook.delivered(member.member_id)) == 1


async def test_redelivered_cause_event_sends_nothing_twice(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
) -> None:
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(nc, member)
        await wait_delivery(notifier, member.member_id, "email", template="welcome")
        level = LevelChanged(
            member_id=member.member_id, old_level="newcomer", new_level="participant", score=10
        )
        event = await publish(nc, level)
        await wait_delivery(notifier, member.member_id, "email", template="level_up")

        # The same event again under another JetStream id (past the duplicate window) ...
        await publish(nc, level, event=event, msg_id=f"again-{event.id}")
        # ... and handled again as if the process had died before recording it as processed.
        [consumer] = [
            c for c in s["notifier"].runtime.bus.consumers if c.name == "notifier-engagement"
        ]
        await consumer.handle(event, level)
        s["notifier"].jobs.dispatcher.wake()

        async def consumer_idle() -> bool:
            info = await nc.jetstream().consumer_info("ENGAGEMENT", "notifier-engagement")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(consumer_idle)
        await s["notifier"].jobs.dispatcher.run_once()
        assert [m["Subject"] for m in smtp.to(member.contacts.email)].count(
            "Новый уровень: участник!"
        ) == 1
        assert (await templates_in_inbox(notifier, member.member_id)).count("level_up") == 1
        assert len(await log(notifier, member_id=member.member_id)) == 4


async def test_member_left_with_erase_forgets_the_member_everywhere(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
) -> None:
    from shared.events import MemberLeft

    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(nc, member)
        await wait_delivery(notifier, member.member_id, "email", template="welcome")
        js = nc.jetstream()

        async def announced() -> bool:
            return (await js.stream_info("NOTIFIER")).state.messages == 2

        await wait_until(announced)
        await publish(
            nc, MemberLeft(member_id=member.member_id, erase=True, left_at=datetime.now(UTC))
        )

        async def forgotten() -> bool:
            r = await notifier.get(f"/v1/members/{member.member_id}/preferences")
            return r.status_code == 404

        await wait_until(forgotten)
        assert await inbox(notifier, member.member_id) == []
        assert await log(notifier, member_id=member.member_id) == []
        doc = await s["notifier"].store.members.find_one({"_id": member.member_id})
        assert set(doc) == {"_id", "status", "left_ms"}

        async def own_stream_erased() -> bool:  # the projection is forgotten first, then NOTIFIER
            return (await js.stream_info("NOTIFIER")).state.messages == 0

        await wait_until(own_stream_erased)
        assert (await js.stream_info("NOTIFIER")).state.messages == 0
        # A late redelivery of the join does not bring the member back.
        await publish(nc, member, msg_id=f"late-{uuid.uuid4()}")
        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="newcomer", new_level="participant", score=10
            ),
        )

        async def idle() -> bool:
            infos = [
                await js.consumer_info(st, c)
                for st, c in (
                    ("MEMBERS", "notifier-members"),
                    ("ENGAGEMENT", "notifier-engagement"),
                )
            ]
            return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

        await wait_until(idle)
        assert (await notifier.get(f"/v1/members/{member.member_id}/inbox")).json()["items"] == []
        doc = await s["notifier"].store.members.find_one({"_id": member.member_id})
        assert doc["status"] == "erased" and "display_name" not in doc


async def test_community_digest_collects_the_day_into_one_message(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
) -> None:
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        asker, helper = joined(timezone="UTC"), joined(display_name="Boris")
        await publish(nc, asker)
        await publish(nc, helper)
        await wait_delivery(notifier, asker.member_id, "email", template="welcome")
        await wait_for_member(notifier, helper.member_id)
        r = await notifier.put(
            f"/v1/members/{asker.member_id}/preferences",
            json={"community": "digest", "digest_hour": 18},
        )
        assert r.status_code == 200, r.text
        for n in range(3):
            await publish(
                nc,
                CommentAdded(
                    comment_id=f"c{n}",
                    post_id="p",
                    author_id=helper.member_id,
                    post_author_id=asker.member_id,
                    created_at=datetime.now(UTC),
                ),
            )

        async def three_in_inbox() -> bool:
            return (await templates_in_inbox(notifier, asker.member_id)).count("comment_added") == 3

        await wait_until(three_in_inbox)
        digest = await wait_delivery(
            notifier, asker.member_id, "email", status="deferred", template="digest"
        )
        due = datetime.fromisoformat(digest["due_at"])
        assert (due.hour, due.minute) == (18, 0) and due > datetime.now(UTC)

        async def all_three_in_the_digest() -> bool:
            doc = await s["notifier"].store.deliveries.find_one({"_id": digest["notification_id"]})
            return len(doc.get("items") or {}) == 3

        await wait_until(all_three_in_the_digest)
        assert len(smtp.to(asker.contacts.email)) == 1  # only the welcome so far

        s["notifier"].clock.offset = due - datetime.now(UTC) + timedelta(seconds=1)
        s["notifier"].jobs.dispatcher.wake()
        await wait_delivery(notifier, asker.member_id, "email", template="digest")
        mail = smtp.to(asker.contacts.email)[-1]
        assert mail["Subject"] == "Новости сообщества за день: 3 события"
        assert mail.get_body(("plain",)).get_content().count("Boris") == 3


async def test_rate_limit_defers_what_exceeds_the_hour(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
) -> None:
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        move_clock(s, next_utc_hour() + timedelta(minutes=5))  # one rate window throughout
        member = joined()
        await publish(nc, member)
        await wait_delivery(notifier, member.member_id, "email", template="welcome")
        r = await notifier.put(
            f"/v1/members/{member.member_id}/preferences", json={"rate_limit_per_hour": 1}
        )
        assert r.status_code == 200
        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="newcomer", new_level="participant", score=10
            ),
        )
        await wait_delivery(notifier, member.member_id, "email", template="level_up")
        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="participant", new_level="active", score=30
            ),
        )
        waiting = await wait_delivery(notifier, member.member_id, "email", status="deferred")
        assert waiting["deferred"] == "rate-limit"
        assert datetime.fromisoformat(waiting["due_at"]) > datetime.now(UTC)
