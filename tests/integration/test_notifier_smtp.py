"""The e-mail channel's SMTP connections against a real local SMTP server (aiosmtpd): kept
open and reused, bounded, replaced when the server closed them or they idled, QUIT at close."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from sarafan.embedded import LOCALHOST, free_port
from services.notifier.channels import EmailChannel, Failed, Outgoing, Sent
from services.notifier.smtp import SmtpPool
from tests.integration.notifier_peers import MailRecorder, smtp_server


@pytest.fixture
def smtp() -> Iterator[MailRecorder]:
    with smtp_server() as recorder:
        yield recorder


def outgoing(address: str | None = None, **over: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "delivery_id": f"n_{uuid.uuid4().hex[:12]}",
        "member_id": "m1",
        "address": address or f"{uuid.uuid4().hex[:8]}@example.org",
        "template": "welcome",
        "category": "account",
        "locale": "en",
        "title": "Welcome",
        "body": "Hello",
        "cause_event_id": "e1",
    }
    return Outgoing(**{**fields, **over})


def channel(smtp: MailRecorder, connections: int = 1) -> EmailChannel:
    return EmailChannel(smtp.url, "Sarafan <noreply@example.org>", 5, connections=connections)  # type: ignore[attr-defined]


async def test_consecutive_emails_go_over_one_connection(smtp: MailRecorder) -> None:
    email = channel(smtp)
    try:
        for _ in range(20):
            assert await email.send(outgoing()) == Sent()
    finally:
        await email.close()
    assert len(smtp.messages) == 20
    assert smtp.connections == 1 and email.pool.opened == 1
    assert smtp.quits == 1  # said at close


async def test_concurrent_sends_share_at_most_the_pools_connections(smtp: MailRecorder) -> None:
    email = channel(smtp, connections=3)
    try:
        outcomes = await asyncio.gather(*(email.send(outgoing()) for _ in range(60)))
    finally:
        await email.close()
    assert outcomes == [Sent()] * 60
    assert len(smtp.messages) == 60
    assert 1 <= smtp.connections <= 3


async def test_a_refused_address_keeps_the_connection_for_the_next_message(
    smtp: MailRecorder,
) -> None:
    smtp.bounce.add("gone@example.org")
    email = channel(smtp)
    try:
        refused = await email.send(outgoing("gone@example.org"))
        assert isinstance(refused, Failed) and refused.contact_dead
        assert await email.send(outgoing()) == Sent()
    finally:
        await email.close()
    assert smtp.connections == 1


async def test_a_connection_the_server_closed_is_replaced_without_failing_the_send() -> None:
    recorder = MailRecorder()
    port = free_port()
    controller = Controller(recorder, hostname=LOCALHOST, port=port)
    controller.start()
    pool = SmtpPool({"hostname": LOCALHOST, "port": port, "timeout": 5}, 1)
    email = EmailChannel(f"smtp://{LOCALHOST}:{port}", "s@example.org", 5)
    email.pool = pool
    try:
        assert await email.send(outgoing()) == Sent()
        controller.stop()  # the server goes away, the pooled connection with it
        controller = Controller(recorder, hostname=LOCALHOST, port=port)
        controller.start()
        assert await email.send(outgoing()) == Sent()
    finally:
        await email.close()
        controller.stop()
    assert len(recorder.messages) == 2 and pool.opened == 2


async def test_an_idle_connection_is_replaced_and_a_worn_one_retired(smtp: MailRecorder) -> None:
    now = [0.0]
    options = {"hostname": LOCALHOST, "port": int(smtp.url.rsplit(":", 1)[1]), "timeout": 5}  # type: ignore[attr-defined]
    pool = SmtpPool(options, 1, idle_seconds=30, per_connection=3, clock=lambda: now[0])
    email = channel(smtp)
    email.pool = pool
    try:
        await email.send(outgoing())
        now[0] += 31  # idle longer than servers keep a client: a fresh one
        await email.send(outgoing())
        assert pool.opened == 2
        await email.send(outgoing())
        await email.send(outgoing())  # the third message on the second connection
        await email.send(outgoing())
        assert pool.opened == 3
    finally:
        await email.close()
    assert len(smtp.messages) == 5 and smtp.connections == 3


async def test_an_unreachable_server_is_a_retry_and_leaves_nothing_open() -> None:
    email = EmailChannel(f"smtp://{LOCALHOST}:{free_port()}", "s@example.org", 2)
    try:
        outcome = await email.send(outgoing())
    finally:
        await email.close()
    assert type(outcome).__name__ == "Retry" and "unreachable" in outcome.error  # type: ignore[union-attr]
    assert email.pool.opened == 0


class DroppingServer(MailRecorder):
    """Closes the first connection when its second message begins, as a server does to an
    idle client whose close the client has not yet noticed."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if session is self.greeted[0] and len(self.messages) == 1:
            server.transport.close()
            return "421 4.4.2 closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


async def test_a_reused_connection_that_drops_is_replaced_and_the_message_sent_once() -> None:
    recorder = DroppingServer()
    controller = Controller(recorder, hostname=LOCALHOST, port=free_port())
    controller.start()
    email = EmailChannel(f"smtp://{LOCALHOST}:{controller.port}", "s@example.org", 5)
    try:
        assert await email.send(outgoing()) == Sent()
        assert await email.send(outgoing("second@example.org")) == Sent()
    finally:
        await email.close()
        controller.stop()
    assert [m["To"] for m in recorder.messages][-1] == "second@example.org"
    assert len(recorder.messages) == 2 and recorder.connections == 2
