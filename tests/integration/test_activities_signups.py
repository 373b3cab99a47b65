"""Sign-ups against real NATS and MongoDB (nx-27017, or MongoDB with MONGODB_URL): capacity, the
waitlist and promotion, no overbooking under concurrency, repeats, refusals."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.events import utcnow
from tests.integration.activities_support import (
    create,
    join_members,
    shift,
    sign_up,
    wait_events,
)


async def test_fifty_concurrent_sign_ups_for_ten_seats_confirm_exactly_ten(activities, nc):
    http = activities.http
    members = await join_members(nc, http, 50)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=10)])

    answers = await asyncio.gather(*(sign_up(http, activity, m) for m in members))

    assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]
    bodies = [r.json() for r in answers]
    confirmed = [b for b in bodies if b["status"] == "confirmed"]
    waitlisted = [b for b in bodies if b["status"] == "waitlisted"]
    assert len(confirmed) == 10 and len(waitlisted) == 40
    assert sorted(b["position"] for b in waitlisted) == list(range(1, 41))
    got = (await http.get(f"/v1/activities/{activity['activity_id']}")).json()["shifts"][0]
    assert (got["confirmed"], got["waitlisted"]) == (10, 40)
    # Everyone can read their sign-up back; the waitlist positions are distinct, 1..40.
    reads = await asyncio.gather(*(http.get(f"/v1/signups/{b['signup_id']}") for b in waitlisted))
    assert sorted(r.json()["position"] for r in reads) == list(range(1, 41))
    await wait_events(nc, "signed-up", 50)
