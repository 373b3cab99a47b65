"""Campaigns under load: bursts of member events handled in batches, leaderboard pages, and
data stored before the sort keys existed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.campaigns.consumers import CampaignsHandlers
from services.campaigns.domain import Standing, ranked
from shared.clock import epoch_ms as to_ms
from shared.clock import from_ms
from shared.events import HoursApproved, LevelChanged, PostCreated, ReferralMade, utcnow
from tests.helpers import wait_until
from tests.integration.test_campaigns_support import (
    Collector,
    campaign_body,
    create_and_start,
    declare_streams,
    member_joined,
    publish,
    wait_known,
)

REFERRERS = 30
REFERRED_EACH = 10


async def stored_events(nc, subject: str) -> int:
    info = await nc.jetstream().stream_info("CAMPAIGNS", subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def all_pages(http, campaign_id: str, limit: int) -> tuple[list[dict], list[str]]:
    items, cursors, cursor = [], [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await http.get(f"/v1/campaigns/{campaign_id}/leaderboard", params=params)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items, cursors
        cursors.append(cursor)


def post(author_id: str, post_id: str) -> PostCreated:
    return PostCreated(
        post_id=post_id, author_id=author_id, kind="post", title="Report", created_at=utcnow()
    )


def level(member_id: str, old: str, new: str) -> LevelChanged:
    return LevelChanged(member_id=member_id, old_level=old, new_level=new, score=30)


def referral(referrer_id: str, referred_id: str, n: int) -> ReferralMade:
    return ReferralMade(
        referral_id=f"r_{n}",
        referrer_id=referrer_id,
        referred_id=referred_id,
        code="K7QX9M",
        at=utcnow(),
    )


async def test_a_burst_of_joins_by_referral_is_scored_once_in_batches(services, nc, monkeypatch):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    milestones = await Collector.on(nc, "campaigns.milestone-reached.>")
    sizes: list[int] = []
    handle = CampaignsHandlers.on_member_batch

    async def counting(self, batch):
        sizes.append(len(batch))
        await handle(self, batch)

    monkeypatch.setattr(CampaignsHandlers, "on_member_batch", counting)
    async with services("campaigns") as s:
        body = {"scoring": {"referral-made": 10, "member-joined": 1}, "milestones": [20, 50]}
        cid = (await create_and_start(s["campaigns"].http, **body))["campaign_id"]

    # Published while the service is down, so that it finds them all at once when it starts.
    referrers = [member_joined() for _ in range(REFERRERS)]
    referred = [member_joined() for _ in range(REFERRERS * REFERRED_EACH)]
    for person in referrers:
        await publish(nc, person)
    referrals = []
    for n, person in enumerate(referred):
        await publish(nc, person)
        referrals.append(
            await publish(nc, referral(referrers[n % REFERRERS].member_id, person.member_id, n))
        )
    for n, person in enumerate(referred[:10]):  # a second referrer: the first keeps the credit
        await publish(nc, referral(referrers[(n + 1) % REFERRERS].member_id, person.member_id, -n))
    for event in referrals[:20]:  # re-published past the duplicate window
        await publish(nc, event.payload(), event=event, msg_id=f"again-{event.id}")
    for n, person in enumerate(referred):  # each friend does something: the referral counts
        await publish(nc, post(person.member_id, f"p_friend_{n}"))
    # A referrer this service never hears of: retried, then dead-lettered, alone.
    await publish(nc, referral("m_ghost", referred[0].member_id, 9999))

    async with services("campaigns") as s:
        http = s["campaigns"].http
        referrer_points = REFERRED_EACH * 10 + 1

        async def scored() -> bool:
            report = (await http.get(f"/v1/campaigns/{cid}/report")).json()
            return report["participants"] == REFERRERS + len(referred) and report[
                "points_total"
            ] == REFERRERS * referrer_points + len(referred)

        await wait_until(scored, timeout=60, message="the burst was never fully scored")
        assert max(sizes) > 1, "the member events were never handled as a batch"
        board, _ = await all_pages(http, cid, 100)
        points = {row["member_id"]: row["points"] for row in board}
        assert len(board) == REFERRERS + len(referred)
        assert all(points[p.member_id] == referrer_points for p in referrers)
        assert all(points[p.member_id] == 1 for p in referred)
        assert "m_ghost" not in points

        async def flushed() -> bool:
            pending = await s["campaigns"].store.standings.count_documents(
                {"outbox_pending": {"$gt": 0}}
            )
            return pending == 0

        await wait_until(flushed, message="milestone events never left the outbox")
        assert await stored_events(nc, f"campaigns.milestone-reached.{cid}") == REFERRERS * 2
        reached = {(e["data"]["member_id"], e["data"]["milestone"]) for e in milestones.events}
        assert reached == {(p.member_id, m) for p in referrers for m in (20, 50)}
        report = (await http.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["milestones_reached"] == REFERRERS * 2
        assert report["new_members_by_referral"] == len(referred)
        assert report["new_members_joined"] == REFERRERS + len(referred)

        async def ghost_dead_lettered() -> bool:
            info = await nc.jetstream().stream_info("DLQ")
            return info.state.messages == 1

        await wait_until(ghost_dead_lettered, timeout=20, message="the ghost referral stayed")


async def test_leaderboard_pages_walk_every_participant_in_rank_order_with_ties(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        body = {"kind": "contest", "scoring": {"post-created": 1}, "milestones": []}
        cid = (await create_and_start(http, **body))["campaign_id"]
        people = [member_joined(f"m_tie_{i:02d}") for i in range(13)]
        for person in reversed(people):
            await publish(nc, person)
        await wait_known(s["campaigns"].store, *[p.member_id for p in people])
        start = from_ms(to_ms(utcnow()))
        expected: list[Standing] = []
        for i, person in enumerate(people):
            points, at = 1 + i % 3, start + timedelta(seconds=i % 2)
            expected.append(Standing(person.member_id, float(points), to_ms(at)))
            for n in range(points):
                post = PostCreated(
                    post_id=f"p_{i}_{n}",
                    author_id=person.member_id,
                    kind="post",
                    title="Report",
                    created_at=at,
                )
                await publish(nc, post)
        order = [s.member_id for s in ranked(expected)]

        async def all_scored() -> bool:
            items, _ = await all_pages(http, cid, 50)
            return sum(i["points"] for i in items) == sum(s.points for s in expected)

        await wait_until(all_scored, timeout=20, message="the posts were never all scored")
        items, cursors = await all_pages(http, cid, 4)
        assert [i["member_id"] for i in items] == order
        assert [i["rank"] for i in items] == list(range(1, len(people) + 1))
        assert cursors == ["4", "8", "12"]
        for bad in ("x", "-1", "1.5", "12345678", ""):
            r = await http.get(f"/v1/campaigns/{cid}/leaderboard", params={"cursor": bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["code"] == "invalid_cursor"
        past_the_end = await http.get(f"/v1/campaigns/{cid}/leaderboard", params={"cursor": "13"})
        assert past_the_end.json()["items"] == [] and past_the_end.json()["next_cursor"] is None


async def test_campaigns_and_standings_stored_before_the_sort_keys_are_listed_and_ranked(
    services, nc
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        old = (await http.post("/v1/campaigns", json=campaign_body(name="old"))).json()
        new = (await http.post("/v1/campaigns", json=campaign_body(name="new"))).json()
        cid = old["campaign_id"]
        # As the previous version stored them: no order_key, no rank_key.
        await store.campaigns.update_one({"_id": cid}, {"$unset": {"order_key": ""}})
        now_ms = to_ms(utcnow())
        await store.standings.insert_many(
            [
                {
                    "_id": f"{cid}:{member}",
                    "campaign_id": cid,
                    "member_id": member,
                    "points": points,
                    "reached_ms": now_ms + delay,
                    "applied": {"k": now_ms},
                    "milestones": {},
                    "version": 1,
                }
                for member, points, delay in (("m_b", 10.0, 0), ("m_a", 10.0, 5), ("m_c", 30.0, 9))
            ]
        )
        listed = (await http.get("/v1/campaigns")).json()["items"]
        assert [c["name"] for c in listed] == ["new"]

        await store.backfill_keys()
        listed = (await http.get("/v1/campaigns")).json()["items"]
        assert [c["name"] for c in listed] == ["new", "old"]
        assert new["campaign_id"] == listed[0]["campaign_id"]
        board = (await http.get(f"/v1/campaigns/{cid}/leaderboard")).json()["items"]
        assert [(b["rank"], b["member_id"]) for b in board] == [(1, "m_c"), (2, "m_b"), (3, "m_a")]
        report = (await http.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["participants"] == 3 and report["points_total"] == 50
        await asyncio.gather(store.backfill_keys(), store.backfill_keys())  # nothing left to do
        listed = (await http.get("/v1/campaigns")).json()["items"]
        assert [c["name"] for c in listed] == ["new", "old"]


async def test_a_burst_of_engagement_is_scored_as_if_handled_one_by_one(services, nc, monkeypatch):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    sizes: list[int] = []
    handle = CampaignsHandlers.on_engagement_batch

    async def counting(self, batch):
        sizes.append(len(batch))
        await handle(self, batch)

    monkeypatch.setattr(CampaignsHandlers, "on_engagement_batch", counting)
    anna, boris, clara = member_joined(), member_joined(), member_joined()
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        body = {
            "kind": "contest",
            "scoring": {"post-created": 2, "hours-approved": 1, "referral-made": 10},
            "milestones": [20],
            "audience": {"regions": [], "roles": [], "min_level": "active"},
        }
        cid = (await create_and_start(http, **body))["campaign_id"]
        for person in (anna, boris, clara):
            await publish(nc, person)
        for person in (anna, clara):
            await publish(nc, level(person.member_id, "participant", "active"))
        await wait_known(store, anna.member_id, boris.member_id, clara.member_id)

        async def levelled() -> bool:
            docs = await store.members_by_id([anna.member_id, clara.member_id])
            return all(d.get("level") == "active" for d in docs.values())

        await wait_until(levelled, message="level-changed never projected")
        await publish(nc, referral(anna.member_id, boris.member_id, 1))

        async def referral_recorded() -> bool:
            totals = await store.activity_totals(cid)
            return totals.get("referral-made", {}).get("count") == 1

        await wait_until(referral_recorded, message="the referral was never recorded")

    # Published while the service is down, so that it finds them all at once when it starts.
    await publish(nc, post(boris.member_id, "p_boris"))  # activates Anna's referral: +10
    posts = [await publish(nc, post(anna.member_id, f"p_anna_{n}")) for n in range(5)]  # +10
    await publish(nc, post(clara.member_id, "p_clara_1"))  # +2, still in the audience
    await publish(nc, level(clara.member_id, "active", "participant"))  # then out of it
    await publish(nc, post(clara.member_id, "p_clara_2"))  # nothing
    await publish(
        nc,
        HoursApproved(
            entry_id="h1",
            member_id=anna.member_id,
            hours=1.5,
            activity="food bank",
            date=utcnow().date(),
            approved_by="m_coord",
        ),
    )  # +1.5
    await publish(nc, posts[0].payload(), event=posts[0], msg_id=f"again-{posts[0].id}")

    async with services("campaigns") as s:
        http = s["campaigns"].http
        expected = {anna.member_id: 21.5, clara.member_id: 2}

        async def scored() -> bool:
            board, _ = await all_pages(http, cid, 50)
            return {row["member_id"]: row["points"] for row in board} == expected

        await wait_until(scored, timeout=20, message=f"standings never became {expected}")
        assert max(sizes) > 1, "the engagement events were never handled as a batch"
        report = (await http.get(f"/v1/campaigns/{cid}/report")).json()
        # Anna's five and Clara's first: Boris is not in the audience, nor Clara at the end.
        assert report["posts"] == 6 and report["hours"] == 1.5
        assert report["milestones_reached"] == 1
