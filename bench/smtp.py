"""E-mail: N messages to a local SMTP server, one connection per message vs reused connections.

The peer is aiosmtpd on 127.0.0.1 in a process of its own, answering at once or after a delay per
reply that stands for the round trip to a real server (`--latency-ms`); TLS, which makes each
new connection dearer still, is not measured.
"Per message" is what the channel did before (`aiosmtplib.send` for each message); the pool
is the channel as it is (`EmailChannel`, `SARAFAN_NOTIFIER_SMTP_CONNECTIONS`). Sends run 32 at a
time, as the dispatcher's `SARAFAN_NOTIFIER_SEND_CONCURRENCY` does.
Run: .venv/bin/python -m bench.smtp [--messages 500] [--latency-ms 0 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller

from bench.stack import emit, machine
from sarafan.embedded import LOCALHOST, free_port
from services.notifier.channels import EmailChannel, Outgoing

CONCURRENCY = 32


class Counter:
    """aiosmtpd handler: counts messages and connections (each greets once); waits `latency`
    seconds before each reply to EHLO, MAIL, RCPT and DATA, as a round trip to a server that
    is not on this machine would."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.messages = 0
        self.connections = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        await asyncio.sleep(self.latency)
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.latency)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.latency)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.latency)
        self.messages += 1
        return "250 OK"


def message(n: int) -> Outgoing:
    return Outgoing(
        delivery_id=f"n_{n:08d}",
        member_id=f"m{n}",
        address=f"member{n}@example.org",
        template="campaign_announcement",
        category="campaigns",
        locale="ru",
        title="Новая кампания: Весенняя уборка",
        body="Выходим на субботник!\nКампания идёт до 2026-05-01.",
        cause_event_id="e1",
        marketing=True,
    )


def serve(latency: float) -> None:
    """The peer, in a process of its own (in the client's process the two would share one
    interpreter lock and measure that): prints its port, then its counts at each line read."""
    counter = Counter(latency)
    controller = Controller(counter, hostname=LOCALHOST, port=free_port())
    controller.start()
    print(controller.port, flush=True)
    for _ in sys.stdin:
        print(json.dumps({"messages": counter.messages, "connections": counter.connections}))
        sys.stdout.flush()
        counter.messages = counter.connections = 0
    controller.stop()


class Peer:
    """The SMTP peer process for one latency."""

    def __init__(self, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.smtp", "--serve", "--latency-ms", str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout and self.process.stdin
        self.url = f"smtp://{LOCALHOST}:{self.process.stdout.readline().strip()}"

    def counts(self) -> dict[str, int]:
        assert self.process.stdout and self.process.stdin
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(10)


async def run(label: str, peer: Peer, messages: int, connections: int | None) -> None:
    channel = EmailChannel(
        peer.url, "Sarafan <noreply@example.org>", 10, connections=connections or 1
    )
    gate = asyncio.Semaphore(CONCURRENCY)
    mails = [message(n) for n in range(messages)]

    async def one(mail: Outgoing) -> None:
        async with gate:
            if connections is None:  # the channel before: a connection per message
                await aiosmtplib.send(channel.compose(mail), **channel.options)
            else:
                await channel.send(mail)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(mail) for mail in mails))
        seconds = time.perf_counter() - started
    finally:
        await channel.close()
    counts = peer.counts()
    emit(
        {
            "run": label,
            **counts,
            "seconds": round(seconds, 2),
            "per_second": round(counts["messages"] / seconds),
        }
    )


async def main(messages: int, latencies: list[float]) -> None:
    print(f"# {machine()}")
    for latency in latencies:
        print(f"## {latency:g} ms per SMTP reply")
        peer = Peer(latency)
        try:
            await run("per message (before)", peer, messages, None)
            for size in (1, 4, 8):
                await run(f"pool of {size}", peer, messages, size)
        finally:
            peer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument(
        "--latency-ms", type=float, nargs="*", default=[0.0, 10.0], help="per SMTP reply"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.latency_ms[0] / 1000)
    else:
        asyncio.run(main(arguments.messages, arguments.latency_ms))
