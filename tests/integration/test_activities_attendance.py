"""Attendance against real NATS and MongoDB: self check-in by code in its window, a coordinator's
check-in and check-out, walk-ins, hours, no-shows at the end plus the grace (exactly once with two
replicas), and the report and community stats from the kept counters. Time is moved through the
service's clock and the jobs' `now`, never slept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from services.activities.app import ActivitiesSettings, compose
from shared.events import utcnow
from tests.integration.activities_support import (
    create,
    events_of,
    join_members,
    shift,
    sign_up,
    wait_events,
)
from tests.integration.conftest import Running, run_service


def at(running: Running, moment: datetime) -> None:
    """Set the service's clock to `moment` (the use cases read it)."""
    running.clock.at(moment)


@asynccontextmanager
async def second_replica(nats_url: str, mongo_url: str, db_prefix: str) -> AsyncIterator[Running]:
    """Another activities process on the same database and durable consumers."""
    async with run_service(
        compose, ActivitiesSettings, nats_url=nats_url, mongo_url=mongo_url,
        database=f"{db_prefix}_activities",
    ) as running:  # fmt: skip
        yield running


async def test_self_check_in_is_open_from_30_minutes_before_the_start_to_the_end(activities, nc):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    starts = utcnow() + timedelta(hours=3)
    activity = await create(http, shifts=[shift(starts, hours=2)])
    code = activity["shifts"][0]["checkin_code"]
    assert code and len(code) == 6
    await sign_up(http, activity, anna)

    async def check_in(member: str, given: str = code):
        return await http.post("/v1/checkin", json={"code": given, "member_id": member})

    at(activities, starts - timedelta(minutes=31))
    early = await check_in(anna)
    assert early.status_code == 409 and early.json()["error"]["code"] == "checkin_not_open"
    at(activities, starts - timedelta(minutes=29))
    wrong = await check_in(anna, "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY")
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_code"
    ok = await check_in(anna, f" {code.lower()[:3]}-{code.lower()[3:]} ")
    assert ok.status_code == 200, ok.text
    assert ok.json()["attendance"]["state"] == "present"
    assert ok.json()["attendance"]["recorded_by"] == anna
    assert ok.json()["attendance"]["walk_in"] is False
    at(activities, starts + timedelta(hours=2))
    late = await check_in(boris)
    assert late.status_code == 409 and late.json()["error"]["code"] == "checkin_closed"
    # The code is shown to manage and checkin keys only: a read-only key does not see it.
    assert activity["shifts"][0]["checkin_code"] == code


async def test_check_out_emits_attended_with_hours_bounded_by_the_shift_and_walk_ins_flagged(
    activities, nc
):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    starts = utcnow() + timedelta(hours=1)
    activity = await create(http, shifts=[shift(starts, hours=3)])
    sid, aid = activity["shifts"][0]["shift_id"], activity["activity_id"]
    signed = (await sign_up(http, activity, anna)).json()
    path = f"/v1/activities/{aid}/attendance"
    at(activities, starts + timedelta(hours=4))

    def mark(member: str, action: str, moment: datetime) -> dict:
        return {"member_id": member, "shift_id": sid, "action": action, "at": moment.isoformat(),
                "recorded_by": "m_coordinator"}  # fmt: skip

    early = starts - timedelta(minutes=20)  # before the start: the hours start at the start
    assert (await http.post(path, json=mark(anna, "check-in", early))).status_code == 200
    out = await http.post(path, json=mark(anna, "check-out", starts + timedelta(minutes=90)))
    assert out.status_code == 200, out.text
    assert out.json()["attendance"]["hours"] == 1.5
    walk = await http.post(path, json=mark(boris, "check-in", starts + timedelta(minutes=10)))
    assert walk.status_code == 200 and walk.json()["status"] == "walk-in"
    assert walk.json()["attendance"]["walk_in"] is True
    late_out = starts + timedelta(hours=3, minutes=30)  # after the end: the hours stop there
    assert (await http.post(path, json=mark(boris, "check-out", late_out))).status_code == 200
    again = await http.post(path, json=mark(anna, "check-out", starts + timedelta(hours=2)))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_checked_out"

    attended = {e["data"]["member_id"]: e["data"] for e in await wait_events(nc, "attended", 2)}
    assert attended[anna]["hours"] == 1.5 and attended[anna]["signup_id"] == signed["signup_id"]
    assert attended[anna]["walk_in"] is False and attended[anna]["recorded_by"] == "m_coordinator"
    assert attended[boris]["hours"] == 2.83 and attended[boris]["walk_in"] is True
    assert attended[boris]["signup_id"] is None
    report = (await http.get(f"/v1/activities/{aid}/report")).json()
    assert (report["attended"], report["walk_ins"], report["hours"]) == (2, 1, 4.33)
    assert report["first_time_attendees"] == 2
    record = (await http.get(f"/v1/members/{anna}/activities")).json()
    assert record["hours"] == 1.5 and record["attended"] == 1
    assert record["items"][0]["title"] == activity["title"]


async def test_no_shows_and_the_last_attended_come_once_at_the_end_plus_grace_on_two_replicas(
    activities, nc, nats_test_url, mongo_url, db_prefix
):
    http = activities.http
    anna, boris, vera = await join_members(nc, http, 3)
    starts = utcnow() + timedelta(hours=1)
    activity = await create(http, shifts=[shift(starts, hours=2, capacity=3)])
    ends = starts + timedelta(hours=2)
    for m in (anna, boris, vera):
        assert (await sign_up(http, activity, m)).status_code == 201
    at(activities, starts + timedelta(minutes=5))
    code = activity["shifts"][0]["checkin_code"]
    assert (
        await http.post("/v1/checkin", json={"code": code, "member_id": anna})
    ).status_code == 200
    confirm = await http.post(
        f"/v1/signups/{(await sign_up(http, activity, boris)).json()['signup_id']}/confirm"
    )
    assert confirm.status_code == 200 and confirm.json()["confirmed_by_member_at"]

    async with second_replica(nats_test_url, mongo_url, db_prefix) as other:
        jobs = (activities.jobs, other.jobs)
        before = ends + timedelta(minutes=59)
        assert await jobs[0].close_shifts(before) == 0  # within the grace: nothing yet
        after = ends + timedelta(minutes=61)
        closed = await asyncio.gather(*(j.close_shifts(after) for j in (*jobs, *jobs)))
        assert sum(closed) == 1

    no_shows = await wait_events(nc, "no-show", 2)
    assert {e["data"]["member_id"] for e in no_shows} == {boris, vera}
    attended = await wait_events(nc, "attended", 1)
    assert attended[0]["data"]["member_id"] == anna
    assert attended[0]["data"]["checked_out_at"] is None
    assert attended[0]["data"]["hours"] == 1.92  # from 5 minutes late to the end
    report = (await http.get(f"/v1/activities/{activity['activity_id']}/report")).json()
    assert (report["confirmed"], report["attended"], report["no_shows"]) == (3, 1, 2)
    assert report["fill_rate"] == 1.0 and report["no_show_rate"] == round(2 / 3, 4)
    # Closed for good: later runs, and a check-in after, change nothing.
    assert await activities.jobs.close_shifts(after + timedelta(hours=1)) == 0
    assert len(await events_of(nc, "no-show")) == 2
    assert len(await events_of(nc, "attended")) == 1
    late = await http.post(
        f"/v1/activities/{activity['activity_id']}/attendance",
        json={
            "member_id": vera,
            "shift_id": activity["shifts"][0]["shift_id"],
            "action": "check-in",
        },
    )
    assert late.status_code == 409


async def test_stats_and_gauges_sum_the_shifts_of_the_last_30_days(activities, nc):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    starts = utcnow() + timedelta(minutes=10)
    activity = await create(http, shifts=[shift(starts, hours=1, capacity=4)])
    for m in (anna, boris):
        await sign_up(http, activity, m)
    sid = activity["shifts"][0]["shift_id"]
    at(activities, starts + timedelta(minutes=30))
    path = f"/v1/activities/{activity['activity_id']}/attendance"
    for action, minutes in (("check-in", 0), ("check-out", 30)):
        moment = (starts + timedelta(minutes=minutes)).isoformat()
        body = {"member_id": anna, "shift_id": sid, "action": action, "at": moment}
        assert (await http.post(path, json=body)).status_code == 200
    await activities.jobs.close_shifts(starts + timedelta(hours=3))

    stats = (await http.get("/v1/activities/stats")).json()

    assert stats["activities_30d"] == 1
    assert stats["volunteer_hours_30d"] == 0.5
    assert stats["fill_rate"] == 0.5 and stats["no_show_rate"] == 0.5
    assert stats["first_time_attendees_30d"] == 1
    metrics = (await http.get("/metrics")).text
    assert 'sarafan_community_volunteer_hours_30d{service="activities"} 0.5' in metrics
    assert 'sarafan_community_fill_rate{service="activities"} 0.5' in metrics
    assert 'sarafan_community_activities_30d{service="activities"} 1.0' in metrics
