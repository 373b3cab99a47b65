"""The campaigns use cases on in-memory collections: lifecycle, scoring, crediting.

No servers: the real store over `tests.fakes.memory`, the kernel's unit of work with a relay
that records what it would publish (`tests.fakes.campaigns`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.campaigns.usecases import Conflict, InvalidCampaign, Missing, UnknownMember
from shared.events import Attended, LevelChanged, MemberJoined, PostCreated, ReferralMade
from tests.fakes.campaigns import T0, CampaignsWorld, batch


def joined(member_id: str, region: str = "moscow") -> MemberJoined:
    return MemberJoined(
        member_id=member_id,
        display_name=member_id.title(),
        region=region,
        contacts={"email": f"{member_id}@example.org"},
        consent={"terms": True},
        joined_at=T0,
    )


def referral(referrer: str, referred: str) -> ReferralMade:
    return ReferralMade(
        referral_id=f"r_{referrer}_{referred}",
        referrer_id=referrer,
        referred_id=referred,
        code="K7QX9M",
        at=T0,
    )


def post(author: str, post_id: str) -> PostCreated:
    return PostCreated(post_id=post_id, author_id=author, kind="post", title="t", created_at=T0)


def attended(member: str, shift_id: str, at=T0 + timedelta(hours=1), **over) -> Attended:
    body = dict(
        activity_id="a1",
        shift_id=shift_id,
        member_id=member,
        checked_in_at=at,
        hours=3.0,
        recorded_by="coordinator",
    )
    body.update(over)
    return Attended(**body)


@pytest.fixture
def world() -> CampaignsWorld:
    return CampaignsWorld()


# -- lifecycle ---------------------------------------------------------------------------------


async def test_a_created_campaign_is_scheduled_and_a_retry_finds_it(world):
    doc = await world.lifecycle.create(world.campaign(), world.clock(), "c_1")
    assert doc["status"] == "scheduled" and doc["window_start_ms"] == doc["starts_ms"]
    again = await world.lifecycle.create(world.campaign(name="other"), world.clock(), "c_1")
    assert again["name"] == "Bring a friend"
    assert len(world.db["campaigns"].documents()) == 1
    assert world.relay.kicks == []  # creating announces nothing


async def test_an_invalid_campaign_names_every_problem_and_stores_nothing(world):
    cmd = world.campaign(ends_at=world.clock() - timedelta(days=1), milestones=[20, 10])
    with pytest.raises(InvalidCampaign) as refused:
        await world.lifecycle.create(cmd, world.clock())
    assert any("past" in p for p in refused.value.problems)
    assert any("ascending" in p for p in refused.value.problems)
    assert world.db["campaigns"].documents() == []


async def test_a_start_by_hand_publishes_campaign_started_once(world):
    doc = await world.lifecycle.create(world.campaign(), world.clock())
    after = await world.lifecycle.start(doc["_id"], world.clock(), by_hand=True)
    assert after is not None and after["status"] == "active"
    assert "outbox" not in after
    [started] = world.relay.published("campaign-started")
    assert started.payload().campaign_id == doc["_id"]
    with pytest.raises(Conflict):
        await world.lifecycle.start(doc["_id"], world.clock(), by_hand=True)
    with pytest.raises(Missing):
        await world.lifecycle.start("c_nope", world.clock(), by_hand=True)
    assert len(world.relay.published("campaign-started")) == 1


async def test_the_tick_starts_what_is_due_ends_what_is_over_and_skips_a_broken_one(world):
    due = await world.lifecycle.create(world.campaign(), world.clock())
    await world.db["campaigns"].insert_one(
        {"_id": "c_broken", "status": "scheduled", "window_start_ms": 0}
    )
    await world.lifecycle.tick()
    assert (await world.store.campaign(due["_id"]))["status"] == "active"
    assert world.skipped.count("campaigns") == 1
    world.clock.advance(timedelta(days=7, seconds=6))  # past the end and its grace
    await world.lifecycle.tick()
    ended = await world.store.campaign(due["_id"])
    assert ended["status"] == "ended" and ended["result"]["participants"] == 0
    assert len(world.relay.published("campaign-ended")) == 1


async def test_ending_names_the_winners_and_cancelling_announces_nothing(world):
    cid = await world.running()
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    await world.scoring.members_changed(
        batch(referral("anna", "boris"), referral("anna", "vera"), referral("boris", "gleb"))
    )
    after = await world.lifecycle.end(cid, world.clock(), by_hand=True)
    assert after is not None
    winners = [(w["member_id"], w["rank"], w["points"]) for w in after["result"]["winners"]]
    assert winners == [("anna", 1, 20), ("boris", 2, 10)]
    [ended] = world.relay.published("campaign-ended")
    assert ended.payload().winners[0].member_id == "anna"
    other = await world.running()
    kicks = len(world.relay.kicks)
    cancelled = await world.lifecycle.cancel(other, world.clock())
    assert cancelled is not None and cancelled["status"] == "cancelled"
    assert len(world.relay.kicks) == kicks
    with pytest.raises(Conflict):
        await world.lifecycle.cancel(other, world.clock())


# -- scoring -----------------------------------------------------------------------------------


async def test_referrals_score_once_and_the_milestone_is_reached_once(world):
    cid = await world.running()
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    referrals = batch(referral("anna", "boris"), referral("anna", "vera"))
    await world.scoring.members_changed(referrals)
    await world.scoring.members_changed(referrals)  # redelivered
    assert world.points(cid) == {"anna": 20}
    [reached] = world.relay.published("milestone-reached")
    assert (reached.payload().milestone, reached.payload().points) == (20, 20)
    # The milestone event follows the referral that passed the milestone.
    assert reached.correlationid == referrals[1][0].correlationid
    assert world.standing(cid, "anna")["milestones"].keys() == {"20"}


async def test_the_first_referrer_keeps_the_credit(world):
    cid = await world.running()
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    await world.scoring.members_changed(batch(referral("anna", "vera"), referral("boris", "vera")))
    assert world.points(cid) == {"anna": 10}


async def test_an_activity_of_a_member_not_known_yet_is_refused_for_a_retry(world):
    await world.running()
    with pytest.raises(UnknownMember):
        await world.scoring.members_changed(batch(referral("ghost", "boris")))


async def test_members_outside_the_audience_or_the_window_score_nothing(world):
    cid = await world.running(scoring={"post-created": 2})
    await world.scoring.members_changed(batch(joined("anna"), joined("tim", region="tver")))
    late = PostCreated(
        post_id="p_late",
        author_id="anna",
        kind="post",
        title="t",
        created_at=T0 + timedelta(days=8),
    )
    await world.scoring.engagement_happened(batch(post("tim", "p1"), late, post("anna", "p2")))
    assert world.points(cid) == {"anna": 2}


async def test_an_active_counted_referral_scores_when_the_referred_member_posts(world):
    cid = await world.running(count_referrals="active", scoring={"referral-made": 10})
    await world.scoring.members_changed(batch(joined("anna"), joined("boris")))
    await world.scoring.members_changed(batch(referral("anna", "boris")))
    assert world.points(cid) == {}
    await world.scoring.engagement_happened(batch(post("boris", "p1")))
    assert world.points(cid) == {"anna": 10}
    await world.scoring.engagement_happened(batch(post("boris", "p2")))
    assert world.points(cid) == {"anna": 10}


async def test_a_level_change_moves_a_member_into_the_audience(world):
    cid = await world.running(
        scoring={"post-created": 1},
        audience={"regions": [], "roles": [], "min_level": "active"},
    )
    await world.scoring.members_changed(batch(joined("anna")))
    await world.scoring.engagement_happened(batch(post("anna", "p1")))
    level = LevelChanged(member_id="anna", old_level="newcomer", new_level="active", score=30)
    await world.scoring.engagement_happened(batch(level, post("anna", "p2")))
    assert world.points(cid) == {"anna": 1}


async def test_a_standing_another_writer_changed_meanwhile_is_credited_again(world):
    cid = await world.running(scoring={"post-created": 5}, milestones=[10, 20])
    await world.scoring.members_changed(batch(joined("anna")))
    await world.scoring.engagement_happened(batch(post("anna", "p1")))
    sid = f"{cid}:anna"
    read, reads = world.store.standings_by_id, []

    async def read_then_race(ids):
        docs = await read(ids)
        reads.append(ids)
        if len(reads) == 1:
            # Another replica credits 5 points between this writer's read and its write.
            await world.db["standings"].update_one(
                {"_id": sid},
                {"$set": {"points": 10.0, "applied.elsewhere": 1}, "$inc": {"version": 1}},
            )
        return docs

    world.store.standings_by_id = read_then_race  # type: ignore[method-assign]
    await world.scoring.engagement_happened(batch(post("anna", "p2"), post("anna", "p3")))
    assert len(reads) == 2  # read again after the lost race
    assert world.points(cid) == {"anna": 20}
    # The lost write would have passed 10 (5 → 15); it never landed, so its milestone event
    # is not published. The write that landed went from 10 to 20: milestone 20 only.
    reached = [e.payload().milestone for e in world.relay.published("milestone-reached")]
    assert reached == [20]
    assert world.standing(cid, "anna")["milestones"].keys() == {"20"}


# -- attendance at activities --------------------------------------------------------------------


async def test_three_attended_shifts_reach_the_challenge_milestone_once(world):
    cid = await world.running(kind="challenge", scoring={"attended": 5}, milestones=[15])
    await world.scoring.members_changed(batch(joined("anna"), joined("tim", region="tver")))
    shifts = batch(attended("anna", "s1"), attended("anna", "s2"))
    await world.scoring.members_acted(shifts)
    await world.scoring.members_acted(shifts)  # redelivered
    # A correction of the first shift is the same attendance; tver is not in the audience.
    await world.scoring.members_acted(batch(attended("anna", "s1", hours=4.5)))
    await world.scoring.members_acted(batch(attended("tim", "s1"), attended("tim", "s2")))
    assert world.points(cid) == {"anna": 10}
    assert world.relay.published("milestone-reached") == []
    await world.scoring.members_acted(batch(attended("anna", "s3")))
    assert world.points(cid) == {"anna": 15}
    [reached] = world.relay.published("milestone-reached")
    assert (reached.payload().member_id, reached.payload().milestone) == ("anna", 15)


async def test_attendance_outside_the_campaign_window_scores_nothing(world):
    cid = await world.running(scoring={"attended": 5})
    await world.scoring.members_changed(batch(joined("anna")))
    before = attended("anna", "s0", at=T0 - timedelta(days=1))
    after = attended("anna", "s9", at=T0 + timedelta(days=8))
    await world.scoring.members_acted(batch(before, after, attended("anna", "s1")))
    assert world.points(cid) == {"anna": 5}


async def test_an_attendance_of_a_member_not_known_yet_is_refused_for_a_retry(world):
    await world.running(scoring={"attended": 5})
    with pytest.raises(UnknownMember):
        await world.scoring.members_acted(batch(attended("ghost", "s1")))


async def test_an_active_counted_referral_scores_when_the_referred_member_attends(world):
    cid = await world.running(count_referrals="active", scoring={"referral-made": 10})
    await world.scoring.members_changed(batch(joined("anna"), joined("boris")))
    await world.scoring.members_changed(batch(referral("anna", "boris")))
    assert world.points(cid) == {}
    await world.scoring.members_acted(batch(attended("boris", "s1")))
    assert world.points(cid) == {"anna": 10}
