"""Real local peers for the notifier's channels, on 127.0.0.1: SMTP, a webhook receiver, Telegram.

Each is a real server the notifier talks to over the network; none is a mock of our code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from sarafan.embedded import LOCALHOST, free_port
from shared.bus import DUPLICATE_WINDOW
from shared.events import CloudEvent, EventData, new_event
from shared.topology import STREAMS
from tests.helpers import wait_until

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BOT_TOKEN = "123456:TEST-token"

# -- SMTP ---------------------------------------------------------------------------------------


class MailRecorder:
    """aiosmtpd handler: keeps every message; refuses addresses in `bounce` with 550, quoting
    the address in the reply as real servers do (Postfix: "<a@b>: Recipient address rejected").

    Counts the connections clients made (each greets with EHLO once) and the QUITs they said;
    `sessions` holds the connection each message came over, in order."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.bounce: set[str] = set()
        self.greeted: list[Any] = []  # one session per connection
        self.sessions: list[Any] = []  # the session of each message
        self.quits = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not any(s is session for s in self.greeted):
            self.greeted.append(session)
        return responses

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    @property
    def connections(self) -> int:
        """How many connections clients opened (and greeted) so far."""
        return len(self.greeted)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.bounce:
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        self.sessions.append(session)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@contextlib.contextmanager
def smtp_server() -> Any:
    recorder = MailRecorder()
    controller = Controller(recorder, hostname=LOCALHOST, port=free_port())
    controller.start()
    try:
        recorder.url = f"smtp://{LOCALHOST}:{controller.port}"  # type: ignore[attr-defined]
        yield recorder
    finally:
        controller.stop()


# -- HTTP peers ---------------------------------------------------------------------------------


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return body


async def _answer(send: Any, status: int, payload: Any = None) -> None:
    body = json.dumps(payload).encode() if payload is not None else b""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn in this event loop, on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=LOCALHOST, port=port, lifespan="off", log_level="warning", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, timeout=10, message="peer never started")
    try:
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        await task


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300
) -> bool:
    """The receiver's side of Standard Webhooks, written from the convention, not our code."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    given = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if "," in s]
    return any(hmac.compare_digest(expected, g) for g in given)


@dataclass
class WebhookReceiver:
    """Verifies each request's signature (401 when wrong); answers `answers` in turn, then 204."""

    secret: str = WEBHOOK_SECRET
    received: list[dict[str, Any]] = field(default_factory=list)  # every verified request
    rejected: int = 0
    answers: list[int] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if not verify_standard_webhook(self.secret, headers, body):
            self.rejected += 1
            await _answer(send, 401, {"error": "bad signature"})
            return
        status = self.answers.pop(0) if self.answers else 204
        self.received.append(
            {"id": headers["webhook-id"], "status": status, "payload": json.loads(body)}
        )
        await _answer(send, status)

    def delivered(self, member_id: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.received
            if r["status"] < 300
            and (member_id is None or r["payload"]["data"]["member_id"] == member_id)
        ]


@dataclass
class FakeTelegram:
    """Bot API `sendMessage`: 200 by default; per chat a script of statuses (429, 403, 400, ...);
    chats in `blocked` answer 403 for ever, as Telegram does for a bot the user blocked. A 400
    quotes the chat, as Telegram's "chat not found" may."""

    token: str = BOT_TOKEN
    calls: list[dict[str, Any]] = field(default_factory=list)
    script: dict[Any, list[int]] = field(default_factory=dict)
    blocked: set[Any] = field(default_factory=set)
    retry_after: int = 1
    url: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        if scope["path"] != f"/bot{self.token}/sendMessage":
            await _answer(send, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        request = json.loads(body)
        chat = request["chat_id"]
        status = (
            403
            if chat in self.blocked
            else (self.script[chat].pop(0) if self.script.get(chat) else 200)
        )
        self.calls.append(
            {"chat_id": chat, "text": request["text"], "status": status, "at": time.monotonic()}
        )
        if status == 200:
            await _answer(
                send,
                200,
                {
                    "ok": True,
                    "result": {
                        "message_id": len(self.calls),
                        "chat": {"id": chat},
                        "text": request["text"],
                    },
                },
            )
        elif status == 429:
            await _answer(
                send,
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {self.retry_after}",
                    "parameters": {"retry_after": self.retry_after},
                },
            )
        elif status == 403:
            await _answer(
                send,
                403,
                {
                    "ok": False,
                    "error_code": 403,
                    "description": "Forbidden: bot was blocked by the user",
                },
            )
        elif status == 400:
            await _answer(
                send,
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": f"Bad Request: chat {chat} not found",
                },
            )
        else:
            await _answer(
                send,
                status,
                {"ok": False, "error_code": status, "description": "Internal Server Error"},
            )

    def delivered(self, chat: Any) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["chat_id"] == chat and c["status"] == 200]


# -- events -------------------------------------------------------------------------------------

#: Each stream's producing service (shared.topology), for streams made ahead of their producers.
SOURCE_STREAMS = {stream: service for service, stream in STREAMS.items()}


async def create_streams(nc: NatsClient, *names: str) -> None:
    """The producers' streams, with the configuration the kernel gives them (Bus.stream_config)."""
    js = nc.jetstream()
    for name in names:
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{SOURCE_STREAMS[name]}.>"],
                storage=StorageType.FILE,
                num_replicas=1,
                duplicate_window=DUPLICATE_WINDOW.total_seconds(),
            )
        )


async def publish(
    nc: NatsClient, data: EventData, *, msg_id: str | None = None, event: CloudEvent | None = None
) -> CloudEvent:
    """Publish an event as its producer would (PubAck, dedup id); `event` re-publishes one."""
    event = event or new_event(data)
    stream = STREAMS[data.service]
    await nc.jetstream().publish(
        event.nats_subject,
        event.to_json(),
        stream=stream,
        headers={"Nats-Msg-Id": msg_id or event.id},
    )
    return event
