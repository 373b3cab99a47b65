"""Unsubscribing from marketing e-mail end to end: members and notifier against real NATS,
MongoDB and a real SMTP peer. The campaign announcement carries RFC 2369/8058 headers and a
link; the link's POST withdraws consent as a PATCH does; its GET changes nothing; forged and
expired links are refused; the answer tells nothing about whom a link names."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import pytest

from shared import unsubscribe
from shared.events import CampaignStarted
from tests.helpers import wait_until
from tests.integration.conftest import join_body
from tests.integration.notifier_peers import MailRecorder, create_streams, publish, smtp_server
from tests.integration.test_notifier_flows import joined

SECRET = "unsubscribe-secret-for-tests-0123456789"
PUBLIC = "https://members.example.org"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def smtp() -> Iterator[MailRecorder]:
    with smtp_server() as recorder:
        yield recorder


def settings(smtp: MailRecorder, **over: Any) -> dict[str, Any]:
    return {
        "SMTP_URL": smtp.url,  # type: ignore[attr-defined]
        "SARAFAN_UNSUBSCRIBE_SECRET": SECRET,
        "SARAFAN_PUBLIC_MEMBERS_URL": PUBLIC,
        "SARAFAN_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
        "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1,
        **over,
    }


async def join(members: Any, **over: Any) -> tuple[str, str]:
    body = join_body(**over)
    r = await members.post("/v1/members", json=body)
    assert r.status_code == 201, r.text
    return r.json()["member_id"], body["email"]


async def announce(nc: Any, campaign_id: str) -> None:
    now = datetime.now(UTC)
    await publish(
        nc,
        CampaignStarted(
            campaign_id=campaign_id,
            name=f"Campaign {campaign_id}",
            kind="promotion",
            audience={"regions": [], "roles": []},
            starts_at=now,
            ends_at=now + timedelta(days=30),
            announcement={"ru": "Выходим на субботник!", "en": "Join the clean-up!"},
        ),
    )


async def mail_of(smtp: MailRecorder, address: str, subject_part: str) -> Any:
    def found() -> Any:
        return next((m for m in smtp.to(address) if subject_part in m["Subject"]), None)

    return await wait_until(found, message=f"no e-mail about {subject_part} to {address}")


def one_click_path(mail: Any) -> str:
    """The path of the https link in List-Unsubscribe (the members service's own)."""
    link = re.search(r"<(https://[^>]+)>", mail["List-Unsubscribe"])
    assert link, mail["List-Unsubscribe"]
    assert link[1].startswith(f"{PUBLIC}/unsubscribe/")
    return urlparse(link[1]).path


async def collect(nc: Any, subject: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        seen.append(json.loads(msg.data))

    await nc.subscribe(subject, cb=on)
    return seen


async def consents(members: Any, member_id: str) -> bool:
    r = await members.get(f"/v1/members/{member_id}")
    assert r.status_code == 200, r.text
    return bool(r.json()["consent"]["marketing"])


async def test_a_campaign_email_carries_one_click_unsubscribe_and_the_welcome_does_not(
    services: Any, nc: Any, smtp: MailRecorder
) -> None:
    await create_streams(nc, "CAMPAIGNS")
    async with services("members", "notifier", **settings(smtp)) as s:
        members = s["members"].http
        anna, address = await join(members, locale="en")
        welcome = await mail_of(smtp, address, "Welcome")
        assert welcome["List-Unsubscribe"] is None and welcome["List-Unsubscribe-Post"] is None

        await announce(nc, "c_spring")
        mail = await mail_of(smtp, address, "c_spring")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        path = one_click_path(mail)
        assert "<mailto:unsubscribe@example.org?subject=unsubscribe>" in mail["List-Unsubscribe"]
        token = path.removeprefix("/unsubscribe/")
        assert unsubscribe.verify(SECRET, token, unsubscribe.MARKETING, time.time()) == anna
        # The visible link, in both parts.
        assert f"Unsubscribe: {PUBLIC}{path}" in mail.get_body(("plain",)).get_content()
        assert f'href="{PUBLIC}{path}"' in mail.get_body(("html",)).get_content()


async def test_the_one_click_post_withdraws_consent_like_a_patch_and_a_get_does_not(
    services: Any, nc: Any, smtp: MailRecorder
) -> None:
    await create_streams(nc, "CAMPAIGNS")
    async with services("members", "notifier", **settings(smtp)) as s:
        members, notifier_store = s["members"].http, s["notifier"].store
        anna, anna_address = await join(members)
        _, boris_address = await join(members)
        updates = await collect(nc, f"members.member-updated.{anna}")
        await announce(nc, "c_first")
        path = one_click_path(await mail_of(smtp, anna_address, "c_first"))

        page = await members.get(path, headers={"Authorization": ""})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in page.text and "One-Click" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert await consents(members, anna)  # a mail scanner's GET unsubscribes no one

        done = await members.post(path, data=ONE_CLICK, headers={"Authorization": ""})
        assert done.status_code == 200, done.text
        assert not await consents(members, anna)
        await wait_until(lambda: updates, message="no member-updated")
        [event] = updates
        assert event["data"]["changes"] == {"consent": {"terms": True, "marketing": False}}
        assert event["keyid"] == "unsubscribe-link"
        again = await members.post(path, data=ONE_CLICK, headers={"Authorization": ""})
        assert (again.status_code, again.text) == (200, done.text)  # idempotent, same answer

        async def projected() -> bool:
            doc = (await notifier_store.members_by_id({anna}))[anna]
            return not (doc.get("consent") or {}).get("marketing")

        await wait_until(projected, message="the notifier never heard of the withdrawal")
        await announce(nc, "c_second")
        await mail_of(smtp, boris_address, "c_second")  # the fan-out has run
        log = await s["notifier"].http.get("/v1/notifications", params={"member_id": anna})
        templates = [d["template"] for d in log.json()["items"]]
        assert templates.count("campaign_announcement") == 2  # c_first's e-mail and inbox item
        assert not [m for m in smtp.to(anna_address) if "c_second" in m["Subject"]]
        assert len(updates) == 1  # neither the GET nor the repeated POST made an event


async def test_a_forged_or_expired_link_is_refused_and_changes_nothing(
    services: Any, nc: Any
) -> None:
    async with services("members", SARAFAN_UNSUBSCRIBE_SECRET=SECRET) as s:
        members = s["members"].http
        anna, _ = await join(members)
        good = unsubscribe.sign(SECRET, anna, unsubscribe.MARKETING, int(time.time()) + 3600)
        expired = unsubscribe.sign(SECRET, anna, unsubscribe.MARKETING, int(time.time()) - 1)
        member_part, expiry, mac = good.split(".")
        forged = [
            f"{member_part}.{expiry}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
            f"{member_part}.{int(expiry) + 86400 * 365}.{mac}",  # a longer life, same signature
            unsubscribe.sign("another-secret-of-enough-length-000000", anna, "marketing", 2**33),
            "not-a-token",
            "x" * 1000,
        ]
        for token in forged:
            for method in ("GET", "POST"):
                r = await members.request(method, f"/unsubscribe/{token}", data=ONE_CLICK)
                assert r.status_code == 400, (token, method, r.text)
                assert "broken" in r.text and r.headers["content-type"].startswith("text/html")
        for method in ("GET", "POST"):
            r = await members.request(method, f"/unsubscribe/{expired}", data=ONE_CLICK)
            assert r.status_code == 410 and "expired" in r.text
        as_json = await members.post(
            f"/unsubscribe/{expired}", headers={"Accept": "application/json"}
        )
        assert as_json.status_code == 410
        assert as_json.json()["error"]["code"] == "link_expired"
        assert await consents(members, anna)


async def test_the_answer_is_the_same_whoever_the_link_names(services: Any) -> None:
    async with services("members", SARAFAN_UNSUBSCRIBE_SECRET=SECRET) as s:
        members = s["members"].http
        known, _ = await join(members)
        withdrawn, _ = await join(members, consent={"terms": True, "marketing": False})
        left, _ = await join(members)
        erased, _ = await join(members)
        assert (await members.delete(f"/v1/members/{left}")).status_code == 204
        assert (await members.delete(f"/v1/members/{erased}?erase=true")).status_code == 204
        unknown = str(uuid.uuid4())
        answers = set()
        for member_id in (known, withdrawn, left, erased, unknown):
            token = unsubscribe.sign(SECRET, member_id, "marketing", int(time.time()) + 60)
            for method in ("GET", "POST"):
                r = await members.request(method, f"/unsubscribe/{token}", data=ONE_CLICK)
                answers.add((method, r.status_code, r.text))
        assert {(m, code) for m, code, _ in answers} == {("GET", 200), ("POST", 200)}
        assert len(answers) == 2  # one page for the GET, one for the POST, whoever it was
        assert not await consents(members, known)


async def test_without_the_secret_the_link_is_unavailable_not_an_error_page_of_the_api(
    services: Any,
) -> None:
    async with services("members") as s:
        token = unsubscribe.sign(SECRET, "m1", "marketing", int(time.time()) + 60)
        r = await s["members"].http.post(f"/unsubscribe/{token}")
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")


async def test_a_fan_out_of_many_emails_goes_over_one_smtp_connection(
    services: Any, nc: Any, smtp: MailRecorder
) -> None:
    await create_streams(nc, "MEMBERS", "CAMPAIGNS")
    env = settings(smtp, SARAFAN_NOTIFIER_SMTP_CONNECTIONS=1, SARAFAN_NOTIFIER_DAILY_BUDGET=50)
    async with services("notifier", **env):
        people = [joined(locale="en") for _ in range(25)]
        for person in people:
            await publish(nc, person)
        await wait_until(lambda: len(smtp.messages) == 25, message="not every welcome was sent")
        await announce(nc, "c_many")
        await wait_until(lambda: len(smtp.messages) == 50, timeout=20, message="announcements")
    assert smtp.connections == 1
    assert len({id(s) for s in smtp.sessions}) == 1
    assert sum(1 for m in smtp.messages if m["List-Unsubscribe-Post"]) == 25
