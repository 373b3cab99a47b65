"""Helpers shared by the engagement integration tests (no tests of its own)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats

from shared.bus import STREAMS
from shared.events import CloudEvent, Consent, Contacts, EventData, MemberJoined, new_event
from tests.helpers import wait_until
from tests.integration.conftest import Running, join_body


async def join(members: httpx.AsyncClient, engagement: httpx.AsyncClient, **over: Any) -> str:
    """Join through the members service and wait until engagement's projection knows them."""
    r = await members.post("/v1/members", json=join_body(**over))
    assert r.status_code == 201, r.text
    member_id = r.json()["member_id"]

    async def known() -> bool:
        return (await engagement.get(f"/v1/members/{member_id}/engagement")).status_code == 200

    await wait_until(known, timeout=15, message=f"engagement never learned of {member_id}")
    return str(member_id)


async def engagement_of(http: httpx.AsyncClient, member_id: str) -> dict[str, Any]:
    r = await http.get(f"/v1/members/{member_id}/engagement")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def wait_points(http: httpx.AsyncClient, member_id: str, points: float) -> dict[str, Any]:
    """Wait until the member's all-time points reach `points` (the consumer is asynchronous)."""

    async def reached() -> dict[str, Any] | None:
        got = await engagement_of(http, member_id)
        return got if got["points_total"] >= points else None

    return await wait_until(reached, timeout=15, message=f"{member_id} never reached {points}")


async def publish(
    nc: nats.NATS, data: EventData, msg_id: str | None = None, **kw: Any
) -> CloudEvent:
    """Publish an event as its producer would (own stream, Nats-Msg-Id = event id)."""
    event = new_event(data, **kw)
    js = nc.jetstream()
    await js.publish(
        event.nats_subject,
        event.to_json(),
        stream=STREAMS[data.service],
        headers={"Nats-Msg-Id": msg_id or event.id},
    )
    return event


async def republish(nc: nats.NATS, event: CloudEvent, msg_id: str) -> None:
    """The same event under another message id: JetStream keeps both copies."""
    js = nc.jetstream()
    await js.publish(
        event.nats_subject,
        event.to_json(),
        stream=STREAMS[event.nats_subject.split(".")[0]],
        headers={"Nats-Msg-Id": msg_id},
    )


@asynccontextmanager
async def collect(nc: nats.NATS, subject: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event published on `subject` while inside, decoded, once per event id (core NATS
    subscription). Once, as the stream keeps it: with two replicas on one database, one's
    sweeper may publish an event the other's relay is publishing (at least once), and
    JetStream drops the copy by its Nats-Msg-Id, but a core subscriber sees both."""
    seen: list[dict[str, Any]] = []
    ids: set[str] = set()

    async def on_message(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("id") not in ids:
            ids.add(event.get("id"))
            seen.append(event)

    sub = await nc.subscribe(subject, cb=on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


def engagement_app(running: dict[str, Running]) -> Any:
    return running["engagement"].app.state.context


def member_joined(member_id: str, at: Any) -> MemberJoined:
    """A member-joined as the members service publishes it, joined at `at`."""
    return MemberJoined(
        member_id=member_id, display_name=member_id, region="moscow", roles=["volunteer"],
        contacts=Contacts(email=f"{member_id}@example.org"),
        consent=Consent(terms=True, marketing=False), joined_at=at,
    )  # fmt: skip
