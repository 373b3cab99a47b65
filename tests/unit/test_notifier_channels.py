"""Channel details that need no peer: signatures, e-mail composition, Telegram chat ids."""

from __future__ import annotations

import pytest

from services.notifier.channels import EmailChannel, Outgoing, TelegramChannel, webhook_signature


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
