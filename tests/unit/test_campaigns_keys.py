"""The campaigns' sort keys and batched writes as pure code: rank keys, the fold of a batch of
credits into one standing write, and how a batch is cut into runs."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.campaigns.consumers import _levelled_member, _projected_member, runs
from services.campaigns.domain import Credit, Rules, Standing, ranked
from services.campaigns.store import at_least, rank_key
from services.campaigns.usecases import Award, standing_write
from shared.events import (
    Audience,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    PostCreated,
    ReferralMade,
    new_event,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
points = st.integers(min_value=1, max_value=100_000).map(lambda n: n / 100)
standings = st.lists(
    st.builds(
        Standing,
        st.text("abcm_0123", min_size=1, max_size=6),
        points,
        st.integers(min_value=0, max_value=2_000_000_000_000),
    ),
    max_size=30,
    unique_by=lambda s: s.member_id,
)


@given(standings)
def test_rank_keys_sort_standings_in_leaderboard_order(rows):
    by_key = sorted(rows, key=lambda s: rank_key(s.member_id, s.points, s.reached_ms))
    assert [s.member_id for s in by_key] == [s.member_id for s in ranked(rows)]


@given(standings, st.integers(min_value=1, max_value=1000))
def test_rank_keys_below_at_least_are_the_standings_with_that_many_points(rows, milestone):
    below = {
        s.member_id
        for s in rows
        if rank_key(s.member_id, s.points, s.reached_ms) < at_least(milestone)
    }
    assert below == {s.member_id for s in rows if s.points >= milestone}


def request(key: str, pts: float, at_ms: int, milestones=(10, 20)) -> Award:
    rules = Rules("c1", Audience(), {}, milestones=tuple(milestones))
    return Award(rules, Credit("m1", key, pts, at_ms))


def test_a_batch_of_credits_becomes_one_insert_with_each_milestone_once():
    write = standing_write(
        None,
        [
            request("e1", 6, 100),
            request("e2", 6, 300),
            request("e1", 6, 400),
            request("e3", 9, 200),
        ],
        now_ms=1000,
    )
    assert write is not None and write.document is not None
    doc = write.document
    assert doc["points"] == 21 and doc["reached_ms"] == 300  # e1 counted once
    assert set(doc["applied"]) == {"e1", "e2", "e3"}
    assert write.crossed == [10, 20] and set(doc["milestones"]) == {"10", "20"}
    assert [e.payload().points for e in write.events] == [12, 21]  # the total when crossed
    assert doc["outbox_pending"] == 2
    assert doc["rank_key"] == rank_key("m1", 21, 300)


def test_credits_already_applied_change_nothing_and_new_ones_update_under_the_version():
    stored = {
        "_id": "c1:m1",
        "points": 12.0,
        "reached_ms": 300,
        "applied": {"e1": 1, "e2": 1},
        "milestones": {"10": 1},
        "version": 4,
    }
    assert standing_write(stored, [request("e1", 6, 100), request("e2", 6, 300)], 1000) is None
    write = standing_write(stored, [request("e2", 6, 300), request("e4", 8.5, 250)], 1000)
    assert write is not None and write.document is None
    assert write.guard == {"_id": "c1:m1", "version": {"$eq": 4}}
    changes = write.update["$set"]
    assert changes["points"] == 20.5 and changes["reached_ms"] == 300
    assert "applied.e4" in changes and "applied.e2" not in changes
    assert write.crossed == [20] and "milestones.20" in changes
    assert write.update["$inc"] == {"version": 1, "outbox_pending": 1}


def test_a_standing_without_points_has_no_rank_key():
    write = standing_write(None, [request("h1", 0.0, 100)], 1000)
    assert write is not None and "rank_key" not in write.document


def joined(member_id: str) -> MemberJoined:
    return MemberJoined(
        member_id=member_id,
        display_name="A",
        region="moscow",
        roles=["volunteer"],
        contacts={"email": "a@example.org"},
        consent={"terms": True},
        joined_at=T0,
    )


def made(referrer: str, referred: str) -> ReferralMade:
    return ReferralMade(
        referral_id=f"r_{referred}",
        referrer_id=referrer,
        referred_id=referred,
        code="K7QX9M",
        at=T0,
    )


def batch(*items):
    return [(new_event(data), data) for data in items]


def test_joins_and_referrals_of_a_batch_are_one_run():
    events = batch(joined("a"), joined("b"), made("a", "b"), joined("c"), made("a", "c"))
    assert [len(r) for r in runs(events, _projected_member)] == [5]


def test_a_change_to_a_member_after_their_activity_starts_a_new_run():
    update = MemberUpdated(member_id="a", changes={"region": "tver"})
    events = batch(joined("a"), joined("b"), made("a", "b"), update, made("a", "c"))
    assert [len(r) for r in runs(events, _projected_member)] == [3, 2]
    left = MemberLeft(member_id="b", erase=True, left_at=T0)
    assert [len(r) for r in runs(batch(made("a", "b"), left), _projected_member)] == [1, 1]
    post = PostCreated(post_id="p1", author_id="a", kind="post", title="t", created_at=T0)
    later = PostCreated(post_id="p2", author_id="b", kind="post", title="t", created_at=T0)
    level = LevelChanged(member_id="a", old_level="newcomer", new_level="active", score=30)
    assert [len(r) for r in runs(batch(level, post, later), _levelled_member)] == [3]
    assert [len(r) for r in runs(batch(post, later, level, post), _levelled_member)] == [2, 2]


def test_an_empty_batch_has_no_runs():
    assert runs([], _projected_member) == []
