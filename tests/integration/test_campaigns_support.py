"""Helpers for the campaigns integration tests (this module holds no tests)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import nats
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from shared.bus import DUPLICATE_WINDOW, STREAMS
from shared.events import CloudEvent, EventData, MemberJoined, new_event, utcnow
from tests.helpers import wait_until


async def declare_streams(nc: nats.NATS, *names: str) -> None:
    """The producers' streams, with the config the kernel gives them (`Bus.stream_config`),
    for tests that publish those producers' events themselves."""
    js = nc.jetstream()
    for name in names:
        service = next(s for s, stream in STREAMS.items() if stream == name)
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[f"{service}.>"],
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW.total_seconds(),
                )
            )


async def publish(
    nc: nats.NATS,
    data: EventData,
    *,
    time: datetime | None = None,
    msg_id: str | None = None,
    event: CloudEvent | None = None,
) -> CloudEvent:
    """Publish an event as its producer would; `msg_id` other than the event id slips past
    JetStream's de-duplication, as a producer re-publishing after its window would."""
    ev = event or new_event(data, time=time)
    stream = STREAMS[ev.nats_subject.split(".", 1)[0]]
    await nc.jetstream().publish(
        ev.nats_subject, ev.to_json(), stream=stream, headers={"Nats-Msg-Id": msg_id or ev.id}
    )
    return ev


def member_joined(member_id: str | None = None, **over: Any) -> MemberJoined:
    body: dict[str, Any] = {
        "member_id": member_id or f"m_{uuid.uuid4().hex[:8]}",
        "display_name": "Anna",
        "region": "moscow",
        "roles": ["volunteer"],
        "contacts": {"email": "a@example.org"},
        "consent": {"terms": True, "marketing": True},
        "joined_at": utcnow(),
    }
    body.update(over)
    return MemberJoined(**body)


def campaign_body(**over: Any) -> dict[str, Any]:
    now = utcnow()
    body: dict[str, Any] = {
        "name": "Bring a friend",
        "kind": "referral-drive",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(days=7)).isoformat(),
        "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
        "scoring": {"referral-made": 10},
        "milestones": [20],
        "winners": 2,
        "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
    }
    body.update(over)
    return body


async def create_and_start(http: Any, **over: Any) -> dict[str, Any]:
    r = await http.post("/v1/campaigns", json=campaign_body(**over))
    assert r.status_code == 201, r.text
    r = await http.post(f"/v1/campaigns/{r.json()['campaign_id']}/start")
    assert r.status_code == 200, r.text
    return r.json()


async def points_of(http: Any, campaign_id: str) -> dict[str, float]:
    r = await http.get(f"/v1/campaigns/{campaign_id}/leaderboard")
    assert r.status_code == 200, r.text
    return {item["member_id"]: item["points"] for item in r.json()["items"]}


async def wait_points(http: Any, campaign_id: str, expected: dict[str, float]) -> None:
    async def reached() -> bool:
        return await points_of(http, campaign_id) == expected

    await wait_until(reached, timeout=15, message=f"standings never became {expected}")


async def wait_known(store: Any, *member_ids: str) -> None:
    """Until the campaigns service has each member in its own projection."""

    async def known() -> bool:
        docs = await store.members_by_id(list(member_ids))
        return all(docs.get(m, {}).get("status") == "active" for m in member_ids)

    await wait_until(known, timeout=15, message=f"members {member_ids} never projected")


class Collector:
    """Every message on a core subscription, decoded (sees duplicates JetStream stored)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def on(cls, nc: nats.NATS, subject: str) -> Collector:
        collector = cls()
        await nc.subscribe(subject, cb=collector.collect)
        return collector

    async def collect(self, msg: Any) -> None:
        self.events.append(json.loads(msg.data))

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]
