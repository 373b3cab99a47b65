"""Helpers for the activities integration tests (this module holds no tests): members as the
members service would announce them, activities as a coordinator would create them, and the
events on the ACTIVITIES stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import nats
import nats.js.errors

from shared.events import MemberLeft, utcnow
from tests.helpers import wait_until
from tests.integration.test_campaigns_support import declare_streams, member_joined, publish

__all__ = ["declare_streams", "publish"]


async def join_members(nc: nats.NATS, http: httpx.AsyncClient, n: int, **over: Any) -> list[str]:
    """`n` members joined (published on MEMBERS as the members service would), once the
    activities service knows them all."""
    await declare_streams(nc, "MEMBERS")
    ids = [f"m_{uuid.uuid4().hex[:12]}" for _ in range(n)]
    await asyncio.gather(*(publish(nc, member_joined(m, **over)) for m in ids))
    for member_id in ids:
        await wait_known(http, member_id)
    return ids


async def wait_known(http: httpx.AsyncClient, member_id: str, known: bool = True) -> None:
    async def check() -> bool:
        r = await http.get(f"/v1/members/{member_id}/activities")
        return (r.status_code == 200) == known

    await wait_until(
        check,
        timeout=20,
        message=f"activities never {'learned of' if known else 'forgot'} {member_id}",
    )


async def leave(nc: nats.NATS, member_id: str, *, erase: bool) -> None:
    await publish(nc, MemberLeft(member_id=member_id, erase=erase, left_at=utcnow()))


def shift(starts: datetime, hours: float = 3, capacity: int = 10, role: str = "planter") -> dict:
    return {
        "role": role,
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=hours)).isoformat(),
        "capacity": capacity,
    }


def activity_body(shifts: list[dict] | None = None, **over: Any) -> dict[str, Any]:
    starts = utcnow() + timedelta(days=2)
    body: dict[str, Any] = {
        "title": "Tree planting in Bitsa park",
        "description": "Bring gloves.",
        "region": "moscow",
        "location": "Bitsa park, north gate",
        "timezone": "Europe/Moscow",
        "organiser_id": "m_organiser",
        "audience": {"regions": ["moscow"], "roles": [], "interests": ["ecology"]},
        "shifts": shifts if shifts is not None else [shift(starts)],
        "status": "published",
        "announce": True,
    }
    body.update(over)
    return body


async def create(http: httpx.AsyncClient, **over: Any) -> dict[str, Any]:
    r = await http.post("/v1/activities", json=activity_body(**over))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def sign_up(
    http: httpx.AsyncClient, activity: dict, member_id: str, n: int = 0
) -> httpx.Response:
    sid = activity["shifts"][n]["shift_id"]
    return await http.post(
        f"/v1/activities/{activity['activity_id']}/shifts/{sid}/signups",
        json={"member_id": member_id},
    )


async def stream_events(nc: nats.NATS, subject: str = "activities.>") -> list[dict[str, Any]]:
    """Every event on the ACTIVITIES stream on `subject`, in order."""
    js = nc.jetstream()
    try:
        info = await js.stream_info("ACTIVITIES")
    except nats.js.errors.NotFoundError:
        return []
    sub = await js.subscribe(subject, stream="ACTIVITIES", ordered_consumer=True)
    events = []
    try:
        for _ in range(info.state.messages):
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                break
            events.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return events


async def events_of(nc: nats.NATS, event_type: str, **data: Any) -> list[dict[str, Any]]:
    found = await stream_events(nc, f"activities.{event_type}.>")
    return [e for e in found if all(e["data"].get(k) == v for k, v in data.items())]


async def wait_events(nc: nats.NATS, event_type: str, count: int, **data: Any) -> list[dict]:
    async def enough() -> list[dict] | None:
        found = await events_of(nc, event_type, **data)
        return found if len(found) >= count else None

    return await wait_until(enough, timeout=20, message=f"{count} {event_type} {data}")
