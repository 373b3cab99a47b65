"""Campaigns against real NATS and MongoDB: referral drive, contest with draw, hours challenge."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from functools import partial

import httpx

from services.campaigns.cli import check_campaign, verify_draw_main
from services.campaigns.consumers import CampaignsHandlers
from services.campaigns.repositories import CampaignsUnitOfWork
from services.campaigns.usecases import Scoring
from shared.events import HoursApproved, LevelChanged, PostCreated, ReferralMade, utcnow
from tests.helpers import wait_until
from tests.integration.conftest import join_body
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


def post(author_id: str, at=None) -> PostCreated:
    return PostCreated(
        post_id=f"p_{uuid.uuid4().hex[:8]}",
        author_id=author_id,
        kind="post",
        title="Cleanup report",
        created_at=at or utcnow(),
    )


async def test_referral_drive_scores_referrers_in_the_audience_and_reports_growth(services, nc):
    await declare_streams(nc, "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with services("members", "campaigns") as s:
        members, campaigns = s["members"].http, s["campaigns"].http
        campaign = await create_and_start(campaigns)
        cid = campaign["campaign_id"]

        async def join(**over):
            r = await members.post("/v1/members", json=join_body(**over))
            assert r.status_code == 201, r.text
            return r.json()

        anna = await join(display_name="Anna")
        boris = await join(display_name="Boris", referral_code=anna["referral_code"])
        vera = await join(display_name="Vera", referral_code=anna["referral_code"])
        gleb = await join(display_name="Gleb", referral_code=boris["referral_code"])
        outsider = await join(display_name="Tver", region="tver")
        friend = await join(
            display_name="Friend", region="tver", referral_code=outsider["referral_code"]
        )
        # A referral counts once the friend does something (here: each posts).
        await wait_known(s["campaigns"].store, *(m["member_id"] for m in (boris, vera, gleb)))
        await wait_known(s["campaigns"].store, friend["member_id"])
        for member in (boris, vera, gleb, friend):
            await publish(nc, post(member["member_id"]))

        await wait_points(campaigns, cid, {anna["member_id"]: 20, boris["member_id"]: 10})
        board = (await campaigns.get(f"/v1/campaigns/{cid}/leaderboard")).json()["items"]
        assert [(i["rank"], i["display_name"]) for i in board] == [(1, "Anna"), (2, "Boris")]
        assert board[0]["milestones"] == [20]

        await wait_until(lambda: seen.of_type("milestone-reached"), message="no milestone event")
        report = (await campaigns.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["participants"] == 2 and report["points_total"] == 30
        assert report["new_members_by_referral"] == 3  # the referral from tver is not in it
        assert report["referred_not_yet_30d"] == 3 and report["referred_active_after_30d"] == 0

        ended = await campaigns.post(f"/v1/campaigns/{cid}/end")
        assert ended.status_code == 200, ended.text
        winners = ended.json()["result"]["winners"]
        assert [(w["member_id"], w["rank"], w["points"]) for w in winners] == [
            (anna["member_id"], 1, 20),
            (boris["member_id"], 2, 10),
        ]
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        event = seen.of_type("campaign-ended")[0]
        assert event["subject"] == cid and event["data"]["participants"] == 2
        assert event["data"]["winners"][0]["member_id"] == anna["member_id"]
        milestones = seen.of_type("milestone-reached")
        assert [(m["data"]["member_id"], m["data"]["milestone"]) for m in milestones] == [
            (anna["member_id"], 20)
        ]


async def test_a_referral_scores_only_once_the_referred_member_posts(services, nc):
    await declare_streams(nc, "ENGAGEMENT")
    async with services("members", "campaigns") as s:
        members, campaigns = s["members"].http, s["campaigns"].http
        # No count_referrals: `active` is the default (sign-ups alone used to score).
        cid = (await create_and_start(campaigns))["campaign_id"]
        anna = (await members.post("/v1/members", json=join_body())).json()
        boris = (
            await members.post("/v1/members", json=join_body(referral_code=anna["referral_code"]))
        ).json()
        vera = (
            await members.post("/v1/members", json=join_body(referral_code=anna["referral_code"]))
        ).json()
        await wait_known(
            s["campaigns"].store, anna["member_id"], boris["member_id"], vera["member_id"]
        )

        async def referrals_recorded() -> bool:
            totals = await s["campaigns"].store.activity_totals(cid)
            return totals.get("referral-made", {}).get("count") == 2

        await wait_until(referrals_recorded, message="referrals never recorded")
        assert await points_of(campaigns, cid) == {}

        await publish(nc, post(boris["member_id"]))
        await publish(nc, post(boris["member_id"]))  # a second post earns the referrer nothing
        await wait_points(campaigns, cid, {anna["member_id"]: 10})

        async def both_posts_handled() -> bool:  # the first post alone gives those points
            totals = await s["campaigns"].store.activity_totals(cid)
            return totals.get("post-created", {}).get("count") == 2

        await wait_until(both_posts_handled, message="the second post was never handled")
        report = (await campaigns.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["posts"] == 2 and report["new_members_by_referral"] == 2


async def test_an_active_referral_scores_when_the_post_was_handled_before_the_referral(
    services, nc
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        cid = (await create_and_start(http))["campaign_id"]
        anna, boris = member_joined(), member_joined()
        await publish(nc, anna)
        await publish(nc, boris)
        await wait_known(store, anna.member_id, boris.member_id)
        joined_at = utcnow()
        await publish(
            nc,
            PostCreated(
                post_id="p1",
                author_id=boris.member_id,
                kind="post",
                title="Hello",
                created_at=joined_at + timedelta(seconds=1),
            ),
        )

        async def boris_active() -> bool:
            return (await store.member(boris.member_id)).get("first_active_ms") is not None

        await wait_until(boris_active, message="the post never reached the projection")
        await publish(
            nc,
            ReferralMade(
                referral_id="r1",
                referrer_id=anna.member_id,
                referred_id=boris.member_id,
                code="K7QX9M",
                at=joined_at,
            ),
        )
        await wait_points(http, cid, {anna.member_id: 10})


async def test_contest_with_draw_publishes_a_seed_anyone_can_verify(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with services("campaigns") as s:
        campaigns = s["campaigns"].http
        cid = (
            await create_and_start(
                campaigns,
                kind="contest",
                winner_rule="draw",
                winners=2,
                scoring={"post-created": 2, "answer-accepted": 5},
                milestones=[],
            )
        )["campaign_id"]
        people = [member_joined() for _ in range(4)]
        for person in people:
            await publish(nc, person)
        await wait_known(s["campaigns"].store, *[p.member_id for p in people])
        for i, person in enumerate(people[:3]):
            for _ in range(i + 1):
                await publish(nc, post(person.member_id))
        await wait_points(
            campaigns, cid, {people[0].member_id: 2, people[1].member_id: 4, people[2].member_id: 6}
        )

        r = await campaigns.post(f"/v1/campaigns/{cid}/end")
        assert r.status_code == 200, r.text
        campaign = r.json()
        assert campaign["result"]["draw"]["procedure"] == "sarafan-draw-v2"
        assert len(campaign["result"]["winners"]) == 2
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        published = seen.of_type("campaign-ended")[0]["data"]
        assert published["draw"]["seed"] == campaign["result"]["draw"]["seed"]
        assert published["draw"]["secret"] == campaign["result"]["draw"]["secret"]
        assert published["draw"]["entrants"] == 3
        assert check_campaign(campaign).ok

        # The operator command, fed by the service's own answer.
        fetched = (await campaigns.get(f"/v1/campaigns/{cid}")).json()
        out = io.StringIO()
        transport = httpx.MockTransport(lambda _: httpx.Response(200, content=json.dumps(fetched)))
        assert (
            verify_draw_main(
                [cid], environ={"SARAFAN_API_TOKEN": "t"}, out=out, transport=transport
            )
            == 0
        ), out.getvalue()


async def test_challenge_scores_approved_hours_per_hour_with_milestones(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.milestone-reached.>")
    async with services("campaigns") as s:
        campaigns = s["campaigns"].http
        cid = (
            await create_and_start(
                campaigns,
                kind="challenge",
                winners=1,
                scoring={"hours-approved": 2},
                milestones=[5, 10, 40],
            )
        )["campaign_id"]
        olga = member_joined()
        await publish(nc, olga)
        await wait_known(s["campaigns"].store, olga.member_id)
        for i, hours in enumerate([1.5, 2.0, 3.25]):
            await publish(
                nc,
                HoursApproved(
                    entry_id=f"h{i}",
                    member_id=olga.member_id,
                    hours=hours,
                    activity="food bank",
                    date=utcnow().date(),
                    approved_by="m_coord",
                ),
            )
        await wait_points(campaigns, cid, {olga.member_id: 13.5})
        await wait_until(lambda: len(seen.events) == 2, message="milestones 5 and 10 not both")
        assert sorted(e["data"]["milestone"] for e in seen.events) == [5, 10]
        report = (await campaigns.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["hours"] == 6.75 and report["milestones_reached"] == 2


async def test_events_outside_the_window_or_the_audience_score_nothing(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        campaigns, store = s["campaigns"].http, s["campaigns"].store
        cid = (
            await create_and_start(
                campaigns,
                kind="contest",
                scoring={"post-created": 1},
                milestones=[],
                audience={"regions": ["moscow"], "roles": ["volunteer"], "min_level": "active"},
            )
        )["campaign_id"]
        window = (await campaigns.get(f"/v1/campaigns/{cid}")).json()["window"]
        insider, outsider, staff = (
            member_joined(),
            member_joined(region="tver"),
            member_joined(roles=["staff"]),
        )
        for person in (insider, outsider, staff):
            await publish(nc, person)
            await publish(
                nc,
                LevelChanged(
                    member_id=person.member_id,
                    old_level="participant",
                    new_level="active",
                    score=30,
                ),
            )
        await wait_known(store, insider.member_id, outsider.member_id, staff.member_id)

        async def levels_set() -> bool:
            docs = await store.members_by_id([insider.member_id, staff.member_id])
            return all(d.get("level") == "active" for d in docs.values())

        await wait_until(levels_set, message="level-changed never projected")
        before = utcnow() - timedelta(minutes=5)
        assert before.isoformat() < window["start"]
        await publish(nc, post(insider.member_id, at=before))  # before the window
        await publish(nc, post(outsider.member_id))  # other region
        await publish(nc, post(staff.member_id))  # other role
        await publish(nc, post(insider.member_id))  # the one that counts
        await wait_points(campaigns, cid, {insider.member_id: 1})

        # A level going down takes the member out of an audience with a minimum level.
        await publish(
            nc,
            LevelChanged(
                member_id=insider.member_id, old_level="active", new_level="participant", score=10
            ),
        )

        async def dropped() -> bool:
            return (await store.member(insider.member_id)).get("level") == "participant"

        await wait_until(dropped, message="level drop never projected")
        await publish(nc, post(insider.member_id))
        last = await publish(nc, post(outsider.member_id))

        async def consumed() -> bool:
            return (
                await s["campaigns"].runtime.bus.processed.find_one(
                    {"_id": f"campaigns-engagement:{last.id}"}
                )
                is not None
            )

        await wait_until(consumed, message="last event never consumed")
        assert await points_of(campaigns, cid) == {insider.member_id: 1}


async def test_redelivered_event_does_not_double_the_points(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        campaigns = s["campaigns"].http
        cid = (
            await create_and_start(
                campaigns, kind="contest", scoring={"post-created": 3}, milestones=[3]
            )
        )["campaign_id"]
        anna = member_joined()
        await publish(nc, anna)
        await wait_known(s["campaigns"].store, anna.member_id)
        event = await publish(nc, post(anna.member_id))
        # The same event again under another message id (past JetStream's dedup window)...
        await publish(nc, post(anna.member_id), event=event, msg_id=f"again-{event.id}")
        await wait_points(campaigns, cid, {anna.member_id: 3})
        # ...and handled again after a crash lost the "processed" mark: the effect is guarded.
        service = s["campaigns"]
        unit_of_work = partial(CampaignsUnitOfWork, service.runtime.relay, service.store)
        scoring = Scoring(service.store, unit_of_work, service.runtime.skipped, service.clock)
        await CampaignsHandlers(scoring).on_engagement_batch([(event, event.payload())])
        assert await points_of(campaigns, cid) == {anna.member_id: 3}
        standing = await s["campaigns"].store.standings.find_one({"_id": f"{cid}:{anna.member_id}"})
        assert list(standing["milestones"]) == ["3"]
