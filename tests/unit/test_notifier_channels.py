"""Channel details that need no peer: signatures, e-mail composition, Telegram chat ids."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.notifier.channels import EmailChannel, Outgoing, TelegramChannel, webhook_signature
from services.notifier.dispatcher import scrub
from services.notifier.domain import Recipient


def test_webhook_signature_matches_the_standard_webhooks_reference_vector() -> None:
    signature = webhook_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_is_used_as_bytes() -> None:
    assert webhook_signature("s3cret", "id", 1, b"{}") != webhook_signature("other", "id", 1, b"{}")


OUT = Outgoing(
    delivery_id="n_abc",
    member_id="m1",
    address="anna@example.org",
    template="welcome",
    category="account",
    locale="ru",
    title="Анна, добро пожаловать!",
    body="<b>Привет</b>\nВторая строка",
    cause_event_id="e1",
)


def test_email_carries_a_stable_message_id_and_an_escaped_html_part() -> None:
    channel = EmailChannel(
        "smtp://user:p%40ss@mail.example.org:2525?starttls=true", "S <s@x.org>", 5
    )
    assert channel.options["hostname"] == "mail.example.org" and channel.options["port"] == 2525
    assert channel.options["password"] == "p@ss" and channel.options["start_tls"] is True
    mail = channel.compose(OUT)
    assert mail["Message-ID"] == "<n_abc@sarafan.notifier>"
    assert mail["Subject"] == "Анна, добро пожаловать!"
    assert mail.get_body(("plain",)).get_content().startswith("<b>Привет</b>")
    html = mail.get_body(("html",)).get_content()
    assert "&lt;b&gt;Привет&lt;/b&gt;" in html and "<b>Привет" not in html


def test_smtps_and_a_wrong_scheme() -> None:
    assert EmailChannel("smtps://mail.example.org", "s@x.org", 5).options["use_tls"] is True
    assert EmailChannel("smtps://mail.example.org", "s@x.org", 5).options["port"] == 465
    with pytest.raises(ValueError, match="smtp://"):
        EmailChannel("http://mail.example.org", "s@x.org", 5)


def test_telegram_chat_ids() -> None:
    assert TelegramChannel.chat_id("123456789") == 123456789
    assert TelegramChannel.chat_id("-100123") == -100123
    assert TelegramChannel.chat_id("anna_k") == "@anna_k"
    assert TelegramChannel.chat_id("@anna_k") == "@anna_k"


def test_a_title_with_line_breaks_still_makes_one_subject_header() -> None:
    channel = EmailChannel("smtp://127.0.0.1:2525", "S <s@x.org>", 5)
    for mark in ("\r", "\n", "\v", "\x85", "\u2028"):
        mail = channel.compose(replace(OUT, title=f"Vera{mark}Victimova, welcome!"))
        assert mail["Subject"] == "Vera Victimova, welcome!"
        assert b"Vera Victimova" in mail.as_bytes()


def test_channel_errors_lose_the_members_addresses_and_the_bot_token() -> None:
    member = Recipient(
        member_id="m1",
        contacts={"email": "vera.v@example.org", "telegram": "@vera_tg", "phone": "+79165554433"},
    )
    error = scrub(
        "550 5.1.1 <vera.v@example.org>: rejected; chat vera_tg; call +79165554433 " + "x" * 900,
        member,
    )
    assert "vera" not in error and "9165554433" not in error
    assert error.startswith("550 5.1.1 <<address>>") and len(error) <= 500
    telegram = TelegramChannel("https://api.telegram.org", "123456:TEST-token", 5)
    assert "TEST-token" not in telegram._error(f"POST {telegram.endpoint} failed")


async def test_the_webhook_payload_carries_the_messages_ids_and_its_own_fields_win() -> None:
    import json

    from services.notifier.channels import WebhookChannel

    channel = WebhookChannel("http://127.0.0.1:9/hooks", "s3cret", 1)
    ids = {"signup_id": "su_1", "actions": {"confirm": "POST /v1/signups/su_1/confirm"}}
    out = replace(OUT, template="activity_reminder", data={**ids, "member_id": "forged"})
    data = json.loads(channel.payload(out))["data"]
    assert data["signup_id"] == "su_1" and data["actions"] == ids["actions"]
    assert data["member_id"] == "m1" and data["notification_id"] == "n_abc"
    await channel.close()
