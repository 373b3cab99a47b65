"""The notifier survives what it is sent: names no header takes, a channel that raises, peers
whose errors quote the member's address, and a log that never learns the bot's token."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from services.notifier.store import NotifierUnitOfWork
from shared.events import CampaignStarted
from shared.logs import configure_logging
from shared.store import epoch_ms
from tests.helpers import wait_until
from tests.integration.notifier_peers import FakeTelegram, MailRecorder, publish, serve
from tests.integration.test_notifier_flows import (
    channels,
    inbox,
    joined,
    log,
    smtp,
    streams,
    telegram,
    wait_delivery,
    webhook,
)
from tests.integration.test_notifier_members import idle

#: The flows' peers and settings, as fixtures (pytest finds them here by name).
FIXTURES = (channels, smtp, streams, telegram, webhook)

#: Each makes EmailMessage refuse a Subject (a line break to it), and each was accepted in a
#: name before the members' edge refused them.
LINE_BREAKS = ["\r", "\v", "\x85", "\u2028", "\n"]
#: Loggers of the local peers (aiosmtpd, uvicorn), which run in the test's process.
PEER_LOGGERS = ("mail.log", "uvicorn")


async def _collect(into: list[dict[str, Any]], msg: Any) -> None:
    into.append(json.loads(msg.data))


async def test_names_with_line_breaks_still_get_their_welcome_email_on_one_subject_line(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        members = [
            joined(
                display_name=f"Vera{mark}Victimova",
                contacts={"email": f"vera{n}.{uuid.uuid4().hex[:6]}@example.org"},
            )
            for n, mark in enumerate(LINE_BREAKS)
        ]
        for member in members:  # projected as they come, from a published member-joined
            await publish(nc, member)
        for member in members:
            sent = await wait_delivery(notifier, member.member_id, "email", template="welcome")
            assert sent["attempts"] == 1 and sent["last_error"] is None
            [mail] = smtp.to(member.contacts.email)
            assert mail["Subject"] == "Vera Victimova, добро пожаловать в сообщество!"
            [item] = await inbox(notifier, member.member_id)
            assert item["title"] == "Vera Victimova, добро пожаловать в сообщество!"
            assert item["body"].startswith("Мы рады")  # the title did not spill into the body


async def test_a_channel_that_raises_is_retried_then_falls_back_with_notification_failed(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
    webhook: Any,
) -> None:
    failed: list[dict[str, Any]] = []
    sub = await nc.subscribe("notifier.notification-failed.*", cb=partial(_collect, failed))
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        # An address no header takes (an event from outside, old data): composing the e-mail
        # raises ValueError, which no channel outcome covers.
        member = joined(contacts={"email": "broken\r@example.org"})
        await publish(nc, member)
        mail = await wait_delivery(notifier, member.member_id, "email", status="failed")
        assert mail["attempts"] == 3  # SARAFAN_NOTIFIER_MAX_ATTEMPTS of the fixture
        assert mail["last_error"].startswith("unexpected ValueError")
        assert mail["fallback"] == "webhook"
        hook = await wait_delivery(notifier, member.member_id, "webhook")
        assert hook["fallback_from"] == mail["notification_id"]
        assert len(webhook.delivered(member.member_id)) == 1
        await wait_until(lambda: failed, message="notification-failed")
        assert [f["data"]["notification_id"] for f in failed] == [mail["notification_id"]]
        assert failed[0]["data"]["attempts"] == 3
        assert smtp.messages == []
    await sub.unsubscribe()


async def test_errors_stored_published_and_logged_never_carry_the_members_address(
    services: Any,
    nc: Any,
    streams: None,
    channels: dict[str, Any],
    smtp: MailRecorder,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:8]
    address, handle = f"gone.{tag}@example.org", f"victim_{tag}"
    smtp.bounce.add(address)  # its 550 quotes the address
    telegram.script[f"@{handle}"] = [400]  # "Bad Request: chat @victim_… not found"
    failed: list[dict[str, Any]] = []
    sub = await nc.subscribe("notifier.notification-failed.*", cb=partial(_collect, failed))
    async with services("notifier", **channels) as s:
        notifier = s["notifier"].http
        member = joined(contacts={"email": address, "telegram": handle})
        await publish(nc, member)
        tg = await wait_delivery(notifier, member.member_id, "telegram", status="failed")
        mail = await wait_delivery(notifier, member.member_id, "email", status="failed")
        await wait_delivery(notifier, member.member_id, "webhook")
        assert "400" in tg["last_error"] and "550" in mail["last_error"]
        await wait_until(lambda: len(failed) == 2, message="two notification-failed")
        stored = (
            await s["notifier"]
            .store.deliveries.find({"member_id": {"$eq": member.member_id}})
            .to_list(None)
        )
    await sub.unsubscribe()
    # The notifier's lines, not the peers' (the SMTP server logs every RCPT it is given).
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(PEER_LOGGERS)]
    everything = {
        "deliveries": json.dumps(stored, default=str),
        "events": json.dumps(failed),
        "log": "\n".join(ours),
    }
    assert "failed for good" in everything["log"]
    # Redacted by the notifier itself, before the log formatter's net (caplog has raw lines).
    for where, text in everything.items():
        assert address not in text and handle not in text, where
    assert "<address>" in everything["deliveries"]


@pytest.fixture
def production_log() -> Iterator[io.StringIO]:
    """The process's logging as a service configures it (text, INFO), into a string; the
    test's own logging is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    noisy = {n: logging.getLogger(n).level for n in ("uvicorn.access", "nats", "httpx", "httpcore")}
    stream = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = stream
    try:
        configure_logging("notifier", "text", "INFO")
    finally:
        sys.stderr = real_stderr
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, was in noisy.items():
            logging.getLogger(name).setLevel(was)


async def test_telegram_sends_and_failures_write_no_bot_token_to_the_log(
    services: Any, nc: Any, streams: None, production_log: io.StringIO
) -> None:
    token = "7283645091:AAFk3hZq9vX2mPqL0sT8wYbN4cRd6eGjU1x"
    fake = FakeTelegram(token=token)
    fake.script["@tg_flaky"] = [500, 200]
    fake.blocked.add("@tg_blocked")
    async with serve(fake) as url:
        settings = {
            "TELEGRAM_API_URL": url,
            "TELEGRAM_BOT_TOKEN": token,
            "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1,
            "SARAFAN_NOTIFIER_RETRY_BASE_SECONDS": 0.1,
        }
        async with services("notifier", **settings) as s:
            notifier = s["notifier"].http
            flaky = joined(contacts={"telegram": "tg_flaky"})
            blocked = joined(contacts={"telegram": "tg_blocked"})
            for member in (flaky, blocked):
                await publish(nc, member)
            done = await wait_delivery(notifier, flaky.member_id, "telegram")
            assert done["attempts"] == 2
            await wait_delivery(notifier, blocked.member_id, "telegram", status="failed")
    lines = production_log.getvalue().splitlines()
    assert any("failed for good" in line for line in lines), lines[-20:]
    assert any("retry 1" in line for line in lines), lines[-20:]
    secret = token.split(":", 1)[1]
    leaked = [line for line in lines if secret in line or "bot<token>" in line or "/bot" in line]
    assert not leaked, leaked  # not even a redacted URL: nothing logged the Bot API's URL


async def test_an_unreadable_member_projection_is_skipped_by_a_fan_out_and_fails_its_sends(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    async with services("notifier", **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        good, bad = joined(), joined()
        for member in (good, bad):
            await publish(nc, member)
        for member in (good, bad):
            await wait_delivery(notifier, member.member_id, "email", template="welcome")
        # Hand-edited, or written by another version: preferences no model reads.
        await store.members.update_one(
            {"_id": bad.member_id}, {"$set": {"preferences": {"channels": "all of them"}}}
        )
        # A push planned before the projection went bad is sent now.
        planned = {
            "_id": "n_planned",
            "member_id": bad.member_id,
            "channel": "email",
            "template": "welcome",
            "context": {},
            "mentions": {},
            "category": "account",
            "locale": "ru",
            "cause_event_id": "e_planned",
            "cause_type": "test",
            "created_at": datetime.now(UTC),
            "created_ms": epoch_ms(datetime.now(UTC)),
            "attempts": 0,
            "status": "pending",
            "due_ms": epoch_ms(datetime.now(UTC)),
            "route": ["email"],
            "tried": [],
        }
        uow = NotifierUnitOfWork(s["notifier"].runtime.relay, store)
        await uow.commit(uow.deliveries.insert([planned]))
        s["notifier"].jobs.dispatcher.wake()
        now = datetime.now(UTC)
        await publish(
            nc,
            CampaignStarted(
                campaign_id="c_all",
                name="Everyone",
                kind="promotion",
                audience={},
                starts_at=now,
                ends_at=now + timedelta(days=1),
                announcement={"ru": "Акция", "en": "Promo"},
            ),
        )
        await wait_delivery(notifier, good.member_id, "inapp", template="campaign_announcement")
        failed = await wait_delivery(notifier, bad.member_id, "email", status="failed")
        assert failed["notification_id"] == "n_planned" and failed["attempts"] == 3
        assert failed["last_error"].startswith("unexpected ValidationError")
        await wait_until(lambda: idle(nc, "CAMPAIGNS", "notifier-campaigns"))
        assert (await nc.jetstream().stream_info("DLQ")).state.messages == 0
        templates = [i["template"] for i in await log(notifier, member_id=bad.member_id)]
        assert "campaign_announcement" not in templates
        metrics = (await notifier.get("/metrics")).text
        assert 'sarafan_documents_skipped_total{collection="members",service="notifier"}' in metrics
