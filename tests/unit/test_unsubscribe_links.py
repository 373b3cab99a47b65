"""Signed unsubscribe links (shared/unsubscribe.py) and what a marketing e-mail carries of them."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import replace

import pytest
from pydantic import ValidationError

from services.members.app import MembersSettings
from services.notifier.app import NotifierSettings, build_channels
from services.notifier.channels import EmailChannel, Outgoing
from services.notifier.deliveries import is_marketing, message_parts
from services.notifier.domain import Message
from services.notifier.smtp import wire_bytes
from services.notifier.unsubscribe import UnsubscribeLinks
from shared import unsubscribe

SECRET = "k" * 32
NOW = 1_800_000_000


def test_a_signed_link_names_its_member_until_it_expires() -> None:
    token = unsubscribe.sign(SECRET, "5f0c-member", unsubscribe.MARKETING, NOW + 60)
    assert unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, NOW) == "5f0c-member"
    with pytest.raises(unsubscribe.LinkExpired):
        unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, NOW + 61)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace(t.split(".")[0], "b3RoZXI"),  # another member ("other")
        lambda t: t.replace(f".{NOW + 60}.", f".{NOW + 10**6}."),  # a longer life
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
        lambda t: t[:-4],  # cut short
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "a" * 1000,
    ],
)
def test_a_tampered_link_is_invalid_even_once_expired(change) -> None:
    token = change(unsubscribe.sign(SECRET, "5f0c-member", unsubscribe.MARKETING, NOW + 60))
    for now in (NOW, NOW + 10**7):
        with pytest.raises(unsubscribe.LinkInvalid):
            unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, now)


def test_a_link_verifies_for_its_own_purpose_and_secret_only() -> None:
    token = unsubscribe.sign(SECRET, "m1", unsubscribe.MARKETING, NOW + 60)
    with pytest.raises(unsubscribe.LinkInvalid):
        unsubscribe.verify(SECRET, token, "everything", NOW)
    with pytest.raises(unsubscribe.LinkInvalid):
        unsubscribe.verify("j" * 32, token, unsubscribe.MARKETING, NOW)


@pytest.mark.parametrize("settings_cls", [MembersSettings, NotifierSettings])
def test_a_weak_secret_is_refused_at_start_without_being_printed(settings_cls) -> None:
    with pytest.raises(ValidationError) as refused:
        settings_cls(SARAFAN_UNSUBSCRIBE_SECRET="hunter2-hunter2")
    assert "at least 32" in str(refused.value) and "hunter2" not in str(refused.value)
    assert settings_cls(SARAFAN_UNSUBSCRIBE_SECRET="").unsubscribe_secret is None
    held = settings_cls(SARAFAN_UNSUBSCRIBE_SECRET=SECRET)
    assert SECRET not in repr(held) and held.unsubscribe_secret.get_secret_value() == SECRET


def test_the_public_url_and_the_mailbox_must_fit_in_a_header() -> None:
    with pytest.raises(ValidationError):
        NotifierSettings(SARAFAN_PUBLIC_MEMBERS_URL="members.example.org")
    with pytest.raises(ValidationError):
        NotifierSettings(SARAFAN_UNSUBSCRIBE_MAILTO="a b@example.org")
    ok = NotifierSettings(
        SARAFAN_PUBLIC_MEMBERS_URL="https://m.example.org/", SARAFAN_UNSUBSCRIBE_MAILTO="u@x.org"
    )
    assert (ok.public_members_url, ok.unsubscribe_mailto) == ("https://m.example.org", "u@x.org")


# -- the e-mail -------------------------------------------------------------------------------

ANNOUNCEMENT = Outgoing(
    delivery_id="n_abc",
    member_id="5f0c-member",
    address="anna@example.org",
    template="campaign_announcement",
    category="campaigns",
    locale="ru",
    title="Новая кампания: Уборка",
    body="Выходим!",
    cause_event_id="e1",
    marketing=True,
)
LINKS = UnsubscribeLinks(SECRET, "https://members.example.org", "unsubscribe@example.org")


def parsed(mail) -> email.message.EmailMessage:
    """The message as the receiving side reads it off the wire."""
    return email.message_from_bytes(wire_bytes(mail), policy=email.policy.default)


def test_a_marketing_email_carries_both_headers_and_a_visible_link() -> None:
    channel = EmailChannel("smtp://127.0.0.1:2525", "S <s@x.org>", 5, unsubscribe=LINKS)
    raw = wire_bytes(channel.compose(ANNOUNCEMENT, now=NOW))
    # One URI per line, never RFC 2047-encoded (mailbox providers would not read it).
    header = re.search(rb"\r\nList-Unsubscribe: (.*?)\r\n(?! )", raw, re.S)
    assert header and header[1].startswith(b"<https://members.example.org/unsubscribe/")
    assert header[1].endswith(b">,\r\n <mailto:unsubscribe@example.org?subject=unsubscribe>")
    assert b"=?" not in header[1]
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    link = header[1].split(b">")[0][1:].decode()
    assert mail["List-Unsubscribe"] == (
        f"<{link}>, <mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = link.rsplit("/", 1)[1]
    assert unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, NOW) == "5f0c-member"
    with pytest.raises(unsubscribe.LinkExpired):  # 90 days by default
        unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, NOW + 91 * 86400)
    text = mail.get_body(("plain",)).get_content()
    assert f"Отписаться от рассылки: {link}" in text and text.startswith("Выходим!")
    html = mail.get_body(("html",)).get_content()
    assert f'<a href="{link}">Отписаться от рассылки</a>' in html


def test_a_transactional_email_carries_no_unsubscribe() -> None:
    channel = EmailChannel("smtp://127.0.0.1:2525", "S <s@x.org>", 5, unsubscribe=LINKS)
    welcome = replace(ANNOUNCEMENT, template="welcome", category="account", marketing=False)
    mail = parsed(channel.compose(welcome))
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None
    assert "unsubscribe" not in mail.get_body(("html",)).get_content()


def test_without_the_one_click_link_only_the_mailto_goes_and_no_post_header() -> None:
    links = UnsubscribeLinks(mailto="unsubscribe@example.org")
    channel = EmailChannel("smtp://127.0.0.1:2525", "S <s@x.org>", 5, unsubscribe=links)
    mail = parsed(channel.compose(replace(ANNOUNCEMENT, locale="en")))
    assert mail["List-Unsubscribe"] == "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    assert mail["List-Unsubscribe-Post"] is None  # one-click needs an https link
    assert "Unsubscribe: mailto:unsubscribe@example.org" in mail.get_body(("plain",)).get_content()
    bare = parsed(EmailChannel("smtp://127.0.0.1:2525", "s@x.org", 5).compose(ANNOUNCEMENT))
    assert bare["List-Unsubscribe"] is None


def test_the_notifier_warns_once_at_start_when_marketing_email_lacks_the_link(caplog) -> None:
    with caplog.at_level(logging.WARNING, "sarafan.notifier"):
        build_channels(NotifierSettings(SMTP_URL="smtp://127.0.0.1:2525"))
        build_channels(NotifierSettings())  # no e-mail: nothing to say
        build_channels(
            NotifierSettings(
                SMTP_URL="smtp://127.0.0.1:2525",
                SARAFAN_UNSUBSCRIBE_SECRET=SECRET,
                SARAFAN_PUBLIC_MEMBERS_URL="https://m.example.org",
            )
        )
    [warning] = [r.getMessage() for r in caplog.records]
    assert "SARAFAN_UNSUBSCRIBE_SECRET and SARAFAN_PUBLIC_MEMBERS_URL not set" in warning


def test_which_deliveries_are_marketing() -> None:
    announcement = Message("campaign_announcement", "campaigns", marketing=True)
    welcome = Message("welcome", "account")
    assert is_marketing({"category": "campaigns", **message_parts(announcement)})
    assert not is_marketing({"category": "account", **message_parts(welcome)})
    assert "marketing" not in message_parts(welcome)  # documents stay as they were
    # A digest holding a marketing item; a document stored before the flag; 0/1 booleans.
    digest = {"category": "community", "items": {"e1": {**message_parts(announcement)}}}
    assert is_marketing(digest)
    assert is_marketing({"category": "campaigns", "template": "campaign_announcement"})
    assert is_marketing({"category": "x", "marketing": 1})
    assert not is_marketing({"category": "community", "items": {"e1": message_parts(welcome)}})
