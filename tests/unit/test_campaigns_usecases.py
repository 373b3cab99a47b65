"""The campaigns use cases on in-memory collections: lifecycle, scoring, crediting.

No servers: the real store over `tests.fakes.memory`, the kernel's unit of work with a relay
that records what it would publish (`tests.fakes.campaigns`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.campaigns import draw
from services.campaigns.cli import check
from services.campaigns.repositories import CampaignsRepository
from services.campaigns.schemas import CampaignOut
from services.campaigns.usecases import Conflict, InvalidCampaign, Missing, UnknownMember
from shared.clock import epoch_ms, from_ms
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
    cmd = world.campaign(
        ends_at=world.clock() - timedelta(days=1), milestones=[20, 10], count_referrals="joined"
    )
    with pytest.raises(InvalidCampaign) as refused:
        await world.lifecycle.create(cmd, world.clock())
    assert any("past" in p for p in refused.value.problems)
    assert any("ascending" in p for p in refused.value.problems)
    assert any("'joined' is no longer accepted" in p for p in refused.value.problems)
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


async def active(world: CampaignsWorld, *members: str) -> None:
    """The members do something that makes their referral count (a post)."""
    await world.scoring.engagement_happened(batch(*(post(m, f"p_{m}") for m in members)))


async def test_ending_names_the_winners_and_cancelling_announces_nothing(world):
    cid = await world.running()
    people = ("anna", "boris", "vera", "gleb")
    await world.scoring.members_changed(batch(*(joined(m) for m in people)))
    await world.scoring.members_changed(
        batch(referral("anna", "boris"), referral("anna", "vera"), referral("boris", "gleb"))
    )
    await active(world, "boris", "vera", "gleb")
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


# -- the draw: committed at the start, frozen and revealed at the end -------------------------


def stored(world: CampaignsWorld, campaign_id: str) -> dict:
    """The campaign document as stored, secret included (no read of the store shows it)."""
    [doc] = [d for d in world.db["campaigns"].documents() if d["_id"] == campaign_id]
    return doc


async def test_a_draw_commits_at_its_start_to_a_secret_no_read_shows(world):
    doc = await world.lifecycle.create(world.campaign(winner_rule="draw"), world.clock())
    after = await world.lifecycle.start(doc["_id"], world.clock(), by_hand=True)
    secret = stored(world, doc["_id"])["draw_secret"]
    assert draw.secret_from_hex(secret)  # 32 random bytes, as hex
    [started] = world.relay.published("campaign-started")
    commitment = started.payload().draw_commitment
    assert commitment == draw.commitment_of(bytes.fromhex(secret))
    assert after["draw_commitment"] == commitment and "draw_secret" not in after
    assert "draw_secret" not in await world.store.campaign(doc["_id"])
    listed = await world.store.list_campaigns(None, 10, None)
    scored_in = await world.store.open_between(0, epoch_ms(world.clock()))  # the scoring's read
    assert [d for d in listed + scored_in if "draw_secret" in d] == []
    assert [d["_id"] for d in scored_in] == [doc["_id"]]
    assert secret.encode() not in started.to_json()
    assert CampaignOut.from_doc(after).draw_commitment == commitment
    assert secret not in CampaignOut.from_doc(after).model_dump_json()


async def test_a_campaign_without_a_draw_commits_to_nothing(world):
    cid = await world.running()
    [started] = world.relay.published("campaign-started")
    assert started.payload().draw_commitment is None
    assert "draw_secret" not in stored(world, cid)


async def test_a_draw_ends_revealing_the_secret_it_committed_to(world):
    cid = await world.running(winner_rule="draw", winners=1)
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    await world.scoring.members_changed(batch(referral("anna", "boris")))
    await active(world, "boris")  # the referral counts once the friend does something
    secret = stored(world, cid)["draw_secret"]
    world.clock.advance(timedelta(days=7, seconds=6))
    await world.lifecycle.tick()
    ended = stored(world, cid)
    assert ended["result"]["draw"]["procedure"] == "sarafan-draw-v2"
    assert ended["result"]["draw"]["secret"] == secret
    [started] = world.relay.published("campaign-started")
    [event] = world.relay.published("campaign-ended")
    published = event.payload()
    assert published.draw.secret == secret and published.draw.standings == [("anna", "10.00")]
    assert published.ending.by_hand is False and published.ending.early is False
    assert published.ending.frozen_at == from_ms(ended["ends_ms"])
    checked = check(started=started.model_dump(mode="json"), ended=event.model_dump(mode="json"))
    assert checked.ok, checked.problems


async def test_an_early_end_by_hand_freezes_then_and_records_who_ended_it(world):
    cid = await world.running(winner_rule="draw")
    world.clock.advance(timedelta(days=2))
    after = await world.lifecycle.end(cid, world.clock(), by_hand=True, key_id="k_manager")
    now_ms = epoch_ms(world.clock())
    assert after["ending"] == {
        "by_hand": True,
        "key_id": "k_manager",
        "early": True,
        "frozen_ms": now_ms,
    }
    assert after["window_end_ms"] == now_ms < after["ends_ms"]
    [event] = world.relay.published("campaign-ended")
    ending = event.payload().ending
    assert (ending.by_hand, ending.key_id, ending.early) == (True, "k_manager", True)
    assert ending.frozen_at == world.clock() and event.payload().ended_at == world.clock()
    shown = CampaignOut.from_doc(after)
    assert shown.ending == ending and shown.result.draw.secret is not None


async def test_an_end_by_hand_after_ends_at_is_not_early_and_freezes_at_ends_at(world):
    cid = await world.running(winner_rule="draw")
    world.clock.advance(timedelta(days=7, seconds=2))  # past ends_at, inside the grace
    after = await world.lifecycle.end(cid, world.clock(), by_hand=True, key_id="k_manager")
    assert after["ending"]["early"] is False and after["ending"]["key_id"] == "k_manager"
    assert after["ending"]["frozen_ms"] == after["ends_ms"] == after["window_end_ms"]


async def test_a_draw_that_started_before_commitments_ends_with_v1(world):
    cid = await world.running(winner_rule="draw")
    await world.db["campaigns"].update_one(
        {"_id": cid}, {"$unset": {"draw_secret": "", "draw_commitment": ""}}
    )
    await world.scoring.members_changed(batch(joined("anna"), joined("boris")))
    await world.scoring.members_changed(batch(referral("anna", "boris")))
    after = await world.lifecycle.end(cid, world.clock(), by_hand=True)
    assert after["result"]["draw"]["procedure"] == "sarafan-draw-v1"
    assert "secret" not in after["result"]["draw"]
    checked = check(campaign=CampaignOut.from_doc(after).model_dump(mode="json"))
    assert checked.ok and checked.procedure == "sarafan-draw-v1"


async def test_a_broken_stored_secret_stops_the_end_rather_than_fall_back_to_v1(world):
    cid = await world.running(winner_rule="draw")
    await world.db["campaigns"].update_one({"_id": cid}, {"$set": {"draw_secret": "oops"}})
    with pytest.raises(ValueError):
        await world.lifecycle.end(cid, world.clock(), by_hand=True)
    assert stored(world, cid)["status"] == "active"


# -- scoring -----------------------------------------------------------------------------------


async def test_referrals_score_once_and_the_milestone_is_reached_once(world):
    cid = await world.running()
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    referrals = batch(referral("anna", "boris"), referral("anna", "vera"))
    await world.scoring.members_changed(referrals)
    await world.scoring.members_changed(referrals)  # redelivered
    assert world.points(cid) == {}  # nothing before the friends do something
    activity = batch(post("boris", "p1"), post("vera", "p2"))
    await world.scoring.engagement_happened(activity)
    await world.scoring.engagement_happened(activity)  # redelivered
    await active(world, "boris", "vera")  # more activity: the referral counted once
    assert world.points(cid) == {"anna": 20}
    [reached] = world.relay.published("milestone-reached")
    assert (reached.payload().milestone, reached.payload().points) == (20, 20)
    # The milestone event follows the activity that made the referral pass it.
    assert reached.correlationid == activity[1][0].correlationid
    assert world.standing(cid, "anna")["milestones"].keys() == {"20"}


async def test_the_first_referrer_keeps_the_credit(world):
    cid = await world.running()
    await world.scoring.members_changed(batch(joined("anna"), joined("boris"), joined("vera")))
    await world.scoring.members_changed(batch(referral("anna", "vera"), referral("boris", "vera")))
    await active(world, "vera")
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


async def test_a_referral_scores_by_default_only_when_the_referred_member_posts(world):
    cid = await world.running(scoring={"referral-made": 10})
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


async def test_a_start_that_fails_after_staging_its_transition_changes_and_announces_nothing(
    world, monkeypatch
):
    await world.lifecycle.create(world.campaign(), world.clock(), "c_1")
    stage = CampaignsRepository.transition

    def staged_then_crash(*args, **kwargs):
        stage(*args, **kwargs)
        raise RuntimeError("the process fails between staging and commit")

    monkeypatch.setattr(CampaignsRepository, "transition", staged_then_crash)
    with pytest.raises(RuntimeError):
        await world.lifecycle.start("c_1", world.clock(), by_hand=True)
    # The unit of work dropped the staged transition: still scheduled, no event kept or sent.
    [stored] = world.db["campaigns"].documents()
    assert stored["status"] == "scheduled" and not stored.get("outbox")
    assert world.relay.kicks == [] and world.relay.published() == []
    monkeypatch.undo()
    assert (await world.lifecycle.start("c_1", world.clock(), by_hand=True))["status"] == "active"
    assert world.relay.types() == ["campaign-started"]
