"""Hours from attendance against real NATS and MongoDB: the activities service's `attended`
becomes an approved hours entry, published once as hours-approved and scored into loyalty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import nats

from services.engagement.attendance import entry_id
from shared.events import ActivityPublished, Attended, parse_event
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    collect,
    engagement_of,
    join,
    publish,
    republish,
    wait_points,
)


def attended(member: str, coordinator: str, shift_id: str = "s1", hours: float = 3.5) -> Attended:
    checked_in = datetime.now(UTC) - timedelta(hours=hours + 1)
    return Attended(
        signup_id=f"su_{shift_id}_{member}",
        activity_id="a1",
        shift_id=shift_id,
        member_id=member,
        checked_in_at=checked_in,
        checked_out_at=checked_in + timedelta(hours=hours),
        hours=hours,
        recorded_by=coordinator,
        walk_in=False,
    )


def published(organiser: str) -> ActivityPublished:
    start = datetime.now(UTC) - timedelta(hours=6)
    return ActivityPublished(
        activity_id="a1",
        title="Food bank: sorting",
        region="moscow",
        timezone="Europe/Moscow",
        organiser_id=organiser,
        shifts=[
            {
                "shift_id": "s1",
                "role": "sorter",
                "starts_at": start,
                "ends_at": start + timedelta(hours=5),
                "capacity": 10,
            }
        ],
    )


async def hours_of(http: Any, member_id: str) -> dict[str, Any]:
    r = await http.get(f"/v1/members/{member_id}/hours")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def drained(nc: nats.NATS, stream: str, durable: str) -> None:
    """Until the durable consumer has taken and acknowledged everything in its stream."""
    js = nc.jetstream()

    async def done() -> bool:
        info = await js.consumer_info(stream, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(done, timeout=15, message=f"{durable} never drained {stream}")


async def test_engagement_is_ready_before_activities_and_declares_its_stream_as_it_would(
    services, nc
):
    async with services("members", "engagement", "campaigns"):
        info = await nc.jetstream().stream_info("ACTIVITIES")
        assert info.config.subjects == ["activities.>"]
        consumers = {c.name for c in await nc.jetstream().consumers_info("ACTIVITIES")}
        assert consumers == {"engagement-activities", "campaigns-activities"}


async def test_an_attendance_becomes_approved_hours_published_once_and_scored(services, nc):
    async with (
        collect(nc, "engagement.hours-approved.>") as approved,
        collect(nc, "engagement.level-changed.>") as levels,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        coordinator = await join(members, http, roles=["volunteer", "coordinator"])
        await publish(nc, published(coordinator))
        first = await publish(nc, attended(volunteer, coordinator))

        got = await wait_points(http, volunteer, 1 + 7)  # joined + 3.5 h × 2
        assert got["hours_approved"] == 3.5 and got["level"] == "participant"
        listing = await hours_of(http, volunteer)
        [entry] = listing["items"]
        assert entry["entry_id"] == entry_id("s1", volunteer)
        assert (entry["status"], entry["source"], entry["decided_by"]) == (
            "approved",
            "attendance",
            coordinator,
        )
        assert (entry["activity"], entry["hours"]) == ("Food bank: sorting", 3.5)
        assert entry["attendance"]["activity_id"] == "a1"
        assert entry["attendance"]["shift_id"] == "s1"
        assert entry["attendance"]["signup_id"] == f"su_s1_{volunteer}"
        assert listing["approved_hours"] == 3.5 and listing["pending_hours"] == 0

        # Stored twice in the stream, and a correction of the same shift: nothing doubles.
        await republish(nc, first, msg_id="another-copy")
        await publish(nc, attended(volunteer, coordinator, hours=4.0))
        await drained(nc, "ACTIVITIES", "engagement-activities")
        await drained(nc, "ENGAGEMENT", "engagement-activity")
        assert len(approved) == 1
        assert approved[0]["subject"] == volunteer
        assert approved[0]["data"] == {
            "entry_id": entry["entry_id"], "member_id": volunteer, "hours": 3.5,
            "activity": "Food bank: sorting", "date": entry["date"], "approved_by": coordinator,
        }  # fmt: skip
        assert [e["data"]["new_level"] for e in levels if e["subject"] == volunteer] == [
            "participant"
        ]
        got = await engagement_of(http, volunteer)
        assert (got["points_total"], got["hours_approved"]) == (8, 3.5)
        assert got["last_active_at"] is not None and got["streak_days"] >= 1
        assert len((await hours_of(http, volunteer))["items"]) == 1
        stats = (await http.get("/v1/stats")).json()
        assert stats["hours_approved_30d"] == 3.5

        # An attendance is verified already: approving it again changes nothing.
        r = await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": coordinator})
        assert r.status_code == 200 and r.json()["status"] == "approved"
        r = await http.post(f"/v1/hours/{entry['entry_id']}/reject", json={"by": coordinator})
        assert r.status_code == 409


async def test_a_batch_of_attendances_credits_each_member_once(services, nc):
    async with (
        collect(nc, "engagement.hours-approved.>") as approved,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        [on_activities] = [
            c for c in s["engagement"].runtime.bus.consumers if c.name == "engagement-activities"
        ]
        coordinator = await join(members, http, roles=["coordinator"])
        volunteers = [await join(members, http) for _ in range(3)]
        events = [
            await publish(nc, attended(m, coordinator, hours=1.0 + i))
            for i, m in enumerate(volunteers)
        ]
        for i, member in enumerate(volunteers):
            await wait_points(http, member, 1 + 2 * (1.0 + i))

        # The same batch handed over again, and with a new attendance in it (a crash before
        # the ack, a second replica): only the new one counts.
        batch = [parse_event(e.to_json()) for e in events]
        await on_activities.handle_batch(batch)
        fresh = await publish(nc, attended(volunteers[0], coordinator, shift_id="s2", hours=2.0))
        await on_activities.handle_batch([*batch, parse_event(fresh.to_json())])
        await drained(nc, "ACTIVITIES", "engagement-activities")
        await drained(nc, "ENGAGEMENT", "engagement-activity")

        # Drained consumers say nothing of an outbox entry not yet relayed: wait for the fourth.
        await wait_until(lambda: len(approved) >= 4, message="the fresh attendance's approval")
        assert sorted(e["data"]["hours"] for e in approved) == [1.0, 2.0, 2.0, 3.0]
        expected = {volunteers[0]: 3.0, volunteers[1]: 2.0, volunteers[2]: 3.0}
        for member, hours in expected.items():
            assert (await engagement_of(http, member))["hours_approved"] == hours
            assert (await hours_of(http, member))["approved_hours"] == hours
        assert (await http.get("/v1/stats")).json()["hours_approved_30d"] == 8.0
