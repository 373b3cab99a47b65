"""SMTP connections kept open and reused across a fan-out, and the bytes a message goes out as.

A connection costs a TCP (often TLS) handshake, a greeting, EHLO and a login: more than the
message itself. `SmtpPool` keeps up to `size` connections open and hands each send one that is
free; a connection goes back to the pool after a message (refused or not: aiosmtplib resets
the envelope), and is closed instead when it broke, when it has carried `per_connection`
messages (servers limit that), or when it sat idle longer than `idle_seconds` (servers close
idle clients; we reconnect rather than find out by failing). A send that fails on a reused
connection because the server had closed it is tried once more on a fresh one: that is not the
message's fault. `close()` says QUIT to every connection at shutdown.

`wire_bytes` flattens a message as SMTP wants it. Python's generator turns any header word
longer than a line (78) into RFC 2047 encoded words, which would make `List-Unsubscribe` (an
https URI of 150 characters) unreadable to mailbox providers; here it is folded between its
URIs instead, each kept whole (RFC 5322 allows 998 characters a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Any

import aiosmtplib
from aiosmtplib.email import extract_recipients, extract_sender

#: Headers whose value is a list of <URI>s (RFC 2369): folded between URIs, never encoded.
URI_LIST_HEADERS = frozenset({"list-unsubscribe"})
#: Errors of a connection the server closed (idle, restarted) before this message was taken.
STALE = (aiosmtplib.SMTPServerDisconnected, ConnectionError)


class MailPolicy(EmailPolicy):
    """The SMTP policy of `email.policy`, but with URI-list headers kept readable."""

    def _uri_list(self, name: str, value: Any) -> str:
        uris = [part.strip() for part in str(value).split(",") if part.strip()]
        return f"{name}: " + f",{self.linesep} ".join(uris) + self.linesep

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in URI_LIST_HEADERS:
            return self._uri_list(name, value)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in URI_LIST_HEADERS:
            return self._uri_list(name, value).encode("ascii")
        return super().fold_binary(name, value)


_POLICY = MailPolicy(linesep="\r\n")


def wire_bytes(mail: EmailMessage, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
    """The message as it is sent: CRLF line ends, 7bit bodies for a server without 8BITMIME,
    UTF-8 headers only where the server takes SMTPUTF8 (what aiosmtplib's own flattening does,
    with URI-list headers kept whole). The channel writes no Bcc."""
    policy = _POLICY.clone(utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    with io.BytesIO() as out:
        BytesGenerator(out, policy=policy).flatten(mail)
        return out.getvalue()


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class SmtpPool:
    """Up to `size` open SMTP connections, reused for consecutive sends (module docstring)."""

    def __init__(
        self,
        options: dict[str, Any],
        size: int,
        *,
        idle_seconds: float = 30.0,
        per_connection: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.idle_seconds = idle_seconds
        self.per_connection = per_connection
        self.clock = clock
        self.opened = 0  # connections opened so far (a figure for tests and the log)
        self._free = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []  # last in, first out: the warmest is reused
        self._closed = False

    async def send(self, mail: EmailMessage) -> None:
        """Send one message; raises what aiosmtplib raises (the channel maps it to an outcome)."""
        async with self._free:
            conn, reused = await self._take()
            try:
                await self._transmit(conn, mail)
            except STALE:
                await self._drop(conn)
                if not reused:
                    raise
                conn = await self._open()  # the server had closed it: once more, afresh
                try:
                    await self._transmit(conn, mail)
                except BaseException:
                    await self._drop(conn)
                    raise
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                await self._give_back(conn)  # refused, but the envelope was reset: reusable
                raise
            except BaseException:
                await self._drop(conn)
                raise
            await self._give_back(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._quit(conn)

    async def _take(self) -> tuple[_Connection, bool]:
        """A free open connection (True: reused), or a new one."""
        while self._idle:
            conn = self._idle.pop()
            if self._usable(conn):
                return conn, True
            await self._quit(conn)
        return await self._open(), False

    def _usable(self, conn: _Connection) -> bool:
        return (
            conn.smtp.is_connected
            and conn.sent < self.per_connection
            and self.clock() - conn.idle_since < self.idle_seconds
        )

    async def _open(self) -> _Connection:
        smtp = aiosmtplib.SMTP(**self.options)
        await smtp.connect()  # greeting, STARTTLS and login as configured
        self.opened += 1
        return _Connection(smtp)

    async def _transmit(self, conn: _Connection, mail: EmailMessage) -> None:
        smtp = conn.smtp
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        sender, recipients = extract_sender(mail), extract_recipients(mail)
        if sender is None or not recipients:
            raise ValueError("a message needs From and To")
        options: list[str] = []
        utf8 = not (sender + "".join(recipients)).isascii()
        if utf8:
            if not smtp.supports_extension("smtputf8"):
                raise aiosmtplib.SMTPNotSupported("a non-ASCII address needs SMTPUTF8")
            options.append("SMTPUTF8")
        eight_bit = smtp.supports_extension("8bitmime")
        if eight_bit:
            options.append("BODY=8BITMIME")
        data = wire_bytes(mail, utf8=utf8, eight_bit=eight_bit)
        conn.sent += 1
        await smtp.sendmail(sender, recipients, data, mail_options=options)

    async def _give_back(self, conn: _Connection) -> None:
        if self._closed or not self._usable_after_send(conn):
            await self._quit(conn)
            return
        conn.idle_since = self.clock()
        self._idle.append(conn)

    def _usable_after_send(self, conn: _Connection) -> bool:
        return conn.smtp.is_connected and conn.sent < self.per_connection

    async def _quit(self, conn: _Connection) -> None:
        """QUIT politely; a connection that is gone or does not answer is just closed."""
        if conn.smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await conn.smtp.quit(timeout=5)
        conn.smtp.close()

    async def _drop(self, conn: _Connection) -> None:
        """A connection in an unknown state (a timeout mid-command, a broken pipe): closed."""
        conn.smtp.close()
