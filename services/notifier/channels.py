"""Push channels behind one small interface: e-mail (SMTP), webhook (Standard Webhooks), Telegram.

Each `send` returns an outcome instead of raising: `Sent`, `Retry` (transient: the same
delivery is tried again later) or `Failed` (permanent: the next channel is tried).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import aiosmtplib
import httpx

from services.notifier.smtp import SmtpPool
from services.notifier.templates import email_html, one_line, unsubscribe_footer
from services.notifier.unsubscribe import UnsubscribeLinks


@dataclass(frozen=True)
class Outgoing:
    """One delivery as a channel sends it."""

    delivery_id: str  # the same on every attempt: receivers de-duplicate by it
    member_id: str
    address: str
    template: str
    category: str
    locale: str
    title: str
    body: str
    cause_event_id: str
    #: Ids a receiver acts on (an activity, a sign-up and its actions): Message.data.
    data: dict[str, Any] = field(default_factory=dict)
    marketing: bool = False  # sent only with marketing consent: carries an unsubscribe link


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class Retry:
    error: str
    after: float | None = None  # the peer's own wait (Retry-After, Telegram retry_after)


@dataclass(frozen=True)
class Failed:
    error: str
    contact_dead: bool = False  # the member's address itself is unusable (bounce, bot blocked)


Outcome = Sent | Retry | Failed


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing) -> Outcome: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _transient_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class EmailChannel:
    """SMTP via aiosmtplib. `SMTP_URL`: smtp://[user:password@]host[:port][?starttls=true] or smtps://.

    Connections are kept open and reused (`smtp.SmtpPool`, at most `connections` at once).
    A marketing message carries List-Unsubscribe (and, with the one-click link,
    List-Unsubscribe-Post) and a visible link to leave (`unsubscribe.UnsubscribeLinks`).
    """

    name = "email"

    def __init__(
        self,
        url: str,
        sender: str,
        timeout: float,
        *,
        connections: int = 8,
        unsubscribe: UnsubscribeLinks | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL must start with smtp:// or smtps://, not {url!r}")
        query = parse_qs(parsed.query)
        self.options: dict[str, Any] = {
            "hostname": parsed.hostname or "127.0.0.1",
            "port": parsed.port or (465 if parsed.scheme == "smtps" else 25),
            "username": unquote(parsed.username) if parsed.username else None,
            "password": unquote(parsed.password) if parsed.password else None,
            "use_tls": parsed.scheme == "smtps",
            "start_tls": query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"),
            "timeout": timeout,
        }
        self.sender = sender
        self.unsubscribe = unsubscribe or UnsubscribeLinks()
        self.pool = SmtpPool(self.options, connections)

    def compose(self, message: Outgoing, now: float | None = None) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = formataddr(("", message.address))
        # A header takes one line: a name with \r, \v, \x85 or \u2028 in the title would make
        # EmailMessage raise (each is a line break to it), so controls become spaces.
        mail["Subject"] = one_line(message.title)
        # Stable across retries, so a mailbox that got it twice shows it once.
        mail["Message-ID"] = f"<{message.delivery_id}@sarafan.notifier>"
        mail["X-Sarafan-Notification-Id"] = message.delivery_id
        footer = None
        if message.marketing:
            for header, value in self.unsubscribe.headers(message.member_id, now).items():
                mail[header] = value
            link = self.unsubscribe.shown(message.member_id, now)
            footer = unsubscribe_footer(message.locale, link) if link else None
        text = f"{message.body}\n\n{footer.text()}" if footer else message.body
        mail.set_content(f"{text}\n")
        mail.add_alternative(
            email_html(message.title, message.body, message.locale, footer), subtype="html"
        )
        return mail

    async def send(self, message: Outgoing) -> Outcome:
        try:
            await self.pool.send(self.compose(message))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            detail = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            if codes and all(c >= 500 for c in codes):
                return Failed(f"address refused: {detail}", contact_dead=True)
            return Retry(f"address deferred: {detail}")
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                return Failed(f"SMTP {exc.code} {exc.message}")
            return Retry(f"SMTP {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Retry(f"SMTP unreachable: {type(exc).__name__}: {exc}")
        return Sent()

    async def close(self) -> None:
        await self.pool.close()


# ---------------------------------------------------------------------------------------------


def webhook_key(secret: str) -> bytes:
    """Standard Webhooks secrets look like `whsec_<base64>`; anything else is used as bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (the Standard Webhooks scheme)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookChannel:
    """JSON POST to the organisation's endpoint, signed; `webhook-id` is the delivery id."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.http = httpx.AsyncClient(timeout=timeout)

    def payload(self, message: Outgoing) -> bytes:
        return json.dumps(
            {
                "type": f"notification.{message.template}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "data": {
                    # The message's own ids (signup_id, activity_id, ...) first: the
                    # notification's fields below always win.
                    **message.data,
                    "notification_id": message.delivery_id,
                    "member_id": message.member_id,
                    "template": message.template,
                    "category": message.category,
                    "locale": message.locale,
                    "title": message.title,
                    "body": message.body,
                    "cause_event_id": message.cause_event_id,
                },
            },
            ensure_ascii=False,
        ).encode()

    async def send(self, message: Outgoing) -> Outcome:
        body = self.payload(message)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook_signature(
                self.secret, message.delivery_id, timestamp, body
            ),
        }
        try:
            response = await self.http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Retry(f"webhook unreachable: {type(exc).__name__}: {exc}")
        if response.is_success:
            return Sent()
        error = f"webhook answered {response.status_code}: {response.text[:200]}"
        if _transient_status(response.status_code):
            return Retry(error, _retry_after(response))
        return Failed(error)

    async def close(self) -> None:
        await self.http.aclose()


# ---------------------------------------------------------------------------------------------


class TelegramChannel:
    """Bot API `sendMessage` at `TELEGRAM_API_URL` (a local fake in tests, a proxy if need be).

    The member's telegram contact is the chat id (numeric once the member has started the
    bot; an @name reaches only public channels and groups).
    """

    name = "telegram"

    def __init__(self, api_url: str, token: str, timeout: float) -> None:
        self.endpoint = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.token = token
        self.http = httpx.AsyncClient(timeout=timeout)

    def _error(self, text: str) -> str:
        """An error as it may be stored and logged: the token is in the endpoint's URL, which
        an exception or a proxy's answer may quote."""
        return text.replace(self.token, "<token>") if self.token else text

    @staticmethod
    def chat_id(address: str) -> str | int:
        text = address.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        return text if text.startswith("@") else f"@{text}"

    async def send(self, message: Outgoing) -> Outcome:
        payload = {
            "chat_id": self.chat_id(message.address),
            "text": f"{message.title}\n\n{message.body}",
            "disable_web_page_preview": True,
        }
        try:
            response = await self.http.post(self.endpoint, json=payload)
        except httpx.HTTPError as exc:
            return Retry(self._error(f"Telegram unreachable: {type(exc).__name__}: {exc}"))
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):  # a proxy's page, not the Bot API
            answer = {}
        if response.status_code == 200 and answer.get("ok"):
            return Sent()
        description = answer.get("description") or response.text[:200]
        error = self._error(f"Telegram {response.status_code}: {description}")
        if response.status_code == 429:
            after = (answer.get("parameters") or {}).get("retry_after")
            return Retry(error, float(after) if after is not None else _retry_after(response))
        if response.status_code == 403:  # the member blocked the bot, or left the chat
            return Failed(error, contact_dead=True)
        if _transient_status(response.status_code):
            return Retry(error, _retry_after(response))
        return Failed(error)

    async def close(self) -> None:
        await self.http.aclose()
