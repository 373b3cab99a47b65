"""How much database work one member-joined and one post-created cost each consumer: the
documents written (each insert, update or delete of a document: what the single-threaded store
does one by one) and the commands sent (round trips), counted by PyMongo's command monitoring
while the consumers absorb a batch of each. Printed as a table (`-s`), and held under bounds so
that a consumer that starts writing more per event fails here, not in a benchmark a year on.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

from pymongo import monitoring

from shared.events import Consent, Contacts, MemberJoined, PostCreated, new_event, utcnow
from shared.topology import SERVICES
from tests.helpers import wait_until
from tests.integration.notifier_peers import create_streams, publish

EVENTS = 200
#: What each consumer's service may write per event (documents, commands), a little above
#: what it does now: lowering a figure is progress, raising it needs a reason.
BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "member-joined": {
        "engagement": (5.5, 0.2),
        "campaigns": (2.5, 0.2),
        "notifier": (5.5, 0.2),
        "activities": (2.5, 0.2),
    },
    # A first post also makes its author a participant: engagement publishes level-changed,
    # which campaigns and the notifier consume too (counted here, per post).
    "post-created": {"engagement": (3.5, 0.2), "campaigns": (4.5, 1.2)},
}
WRITE_COMMANDS = {"insert": "documents", "update": "updates", "delete": "deletes"}


class WriteCounter(monitoring.CommandListener):
    """Documents written and commands sent, by service (its database's suffix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.documents: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        service = event.database_name.removeprefix(f"{self.prefix}_")
        if service not in SERVICES or service == event.database_name:
            return
        name = event.command_name
        if name in WRITE_COMMANDS:
            written = len(event.command.get(WRITE_COMMANDS[name]) or [])
        elif name == "findAndModify":
            written = 1
        else:
            return
        with self._lock:
            self.documents[service] += written
            self.commands[service] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.documents), Counter(self.commands)


async def settled(nc: Any, consumers: list[tuple[str, str]]) -> None:
    """Every consumer has nothing pending or unacknowledged, twice in a row."""
    js = nc.jetstream()

    async def idle() -> bool:
        for stream, durable in consumers:
            info = await js.consumer_info(stream, durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    await wait_until(idle, timeout=120, message="the consumers did not catch up")
    await asyncio.sleep(1.0)  # what a handler kicked (the relay, the fan-out) lands
    await wait_until(idle, timeout=60, message="the consumers did not catch up")


def joined(i: int) -> MemberJoined:
    return MemberJoined(
        member_id=f"m{i:05d}",
        display_name=f"Volunteer {i}",
        region=f"region-{i % 7}",
        roles=["volunteer"],
        interests=["ecology"],
        contacts=Contacts(email=f"v{i}@example.org"),
        consent=Consent(terms=True, marketing=True),
        joined_at=utcnow() - timedelta(days=i % 30),
    )


def post(i: int) -> PostCreated:
    return PostCreated(
        post_id=f"p{i:05d}",
        author_id=f"m{i % EVENTS:05d}",
        kind="post",
        title="A Saturday at the food bank",
        created_at=utcnow() - timedelta(hours=i % 48),
    )


def table(rows: dict[str, dict[str, tuple[float, float]]]) -> str:
    lines = ["event           service      documents/event  commands/event"]
    for event_type, by_service in rows.items():
        for service, (documents, commands) in by_service.items():
            lines.append(f"{event_type:<15} {service:<12} {documents:>15.2f} {commands:>15.2f}")
    return "\n".join(lines)


async def test_what_each_consumer_writes_per_member_joined_and_per_post_created(
    services, nc, db_prefix
):
    counter = WriteCounter(db_prefix)
    monitoring.register(counter)  # clients made from now on report to it
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS", "ACTIVITIES")
    async with services("engagement", "campaigns", "notifier", "activities"):
        members = [("MEMBERS", f"{s}-members") for s in ("engagement", "campaigns", "notifier")]
        members.append(("MEMBERS", "activities-members"))
        await settled(nc, members)
        before_docs, before_cmds = counter.snapshot()
        await asyncio.gather(*(publish(nc, joined(i)) for i in range(EVENTS)))
        await settled(nc, members)
        joined_docs, joined_cmds = counter.snapshot()

        posts = [("ENGAGEMENT", "engagement-activity"), ("ENGAGEMENT", "campaigns-engagement")]
        await asyncio.gather(
            *(publish(nc, post(i), event=new_event(post(i))) for i in range(EVENTS))
        )
        await settled(nc, posts)
        posted_docs, posted_cmds = counter.snapshot()

    measured: dict[str, dict[str, tuple[float, float]]] = {}
    phases = {
        "member-joined": (before_docs, before_cmds, joined_docs, joined_cmds),
        "post-created": (joined_docs, joined_cmds, posted_docs, posted_cmds),
    }
    for event_type, (docs0, cmds0, docs1, cmds1) in phases.items():
        measured[event_type] = {
            service: (
                (docs1[service] - docs0[service]) / EVENTS,
                (cmds1[service] - cmds0[service]) / EVENTS,
            )
            for service in BOUNDS[event_type]
        }
    print("\n" + table(measured))
    for event_type, by_service in BOUNDS.items():
        for service, (max_documents, max_commands) in by_service.items():
            documents, commands = measured[event_type][service]
            assert documents <= max_documents, (event_type, service, documents)
            assert commands <= max_commands, (event_type, service, commands)
