"""Campaigns scoring attendance at activities against real NATS and MongoDB: a "three shifts
this month" challenge."""

from __future__ import annotations

from datetime import timedelta

from shared.events import Attended, utcnow
from tests.helpers import wait_until
from tests.integration.test_campaigns_support import (
    Collector,
    create_and_start,
    declare_streams,
    member_joined,
    points_of,
    publish,
    wait_known,
    wait_points,
)


def attended(member_id: str, shift_id: str, *, ago: timedelta = timedelta(0), hours: float = 3.0):
    return Attended(
        signup_id=f"su_{shift_id}_{member_id}",
        activity_id="a1",
        shift_id=shift_id,
        member_id=member_id,
        checked_in_at=utcnow() - ago,
        hours=hours,
        recorded_by="m_coord",
    )


async def test_a_challenge_of_three_shifts_reaches_its_milestone_inside_window_and_audience(
    services, nc
):
    # ACTIVITIES is not declared here: the campaigns service declares it as the activities
    # service would, so it is ready before that service exists.
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.milestone-reached.>")
    async with services("campaigns") as s:
        campaigns = s["campaigns"].http
        cid = (
            await create_and_start(
                campaigns,
                name="Three shifts this month",
                kind="challenge",
                winners=1,
                scoring={"attended": 5},
                milestones=[15],
            )
        )["campaign_id"]
        anna, tim = member_joined(), member_joined(region="tver")
        for person in (anna, tim):
            await publish(nc, person)
        await wait_known(s["campaigns"].store, anna.member_id, tim.member_id)

        first = await publish(nc, attended(anna.member_id, "s1"))
        await publish(nc, first.payload(), event=first, msg_id="another-copy")  # stored twice
        await publish(nc, attended(anna.member_id, "s1", hours=4.5))  # a correction of it
        await publish(nc, attended(anna.member_id, "s0", ago=timedelta(days=2)))  # before
        for shift in ("s1", "s2", "s3"):
            await publish(nc, attended(tim.member_id, shift))  # not in the audience
        await publish(nc, attended(anna.member_id, "s2"))
        await wait_points(campaigns, cid, {anna.member_id: 10})
        assert seen.events == []

        await publish(nc, attended(anna.member_id, "s3"))
        await wait_points(campaigns, cid, {anna.member_id: 15})
        await wait_until(lambda: seen.events, message="no milestone-reached")

        js = nc.jetstream()

        async def drained() -> bool:
            info = await js.consumer_info("ACTIVITIES", "campaigns-activities")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(drained, message="campaigns-activities never drained")
        assert await points_of(campaigns, cid) == {anna.member_id: 15}
        [reached] = seen.events
        assert (reached["data"]["member_id"], reached["data"]["milestone"]) == (
            anna.member_id,
            15,
        )
        report = (await campaigns.get(f"/v1/campaigns/{cid}/report")).json()
        assert (report["attendances"], report["participants"]) == (3, 1)
