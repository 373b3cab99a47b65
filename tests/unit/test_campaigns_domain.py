"""Campaign rules: window, audience, scoring, standings, milestones, ties, validation."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.campaigns.domain import (
    DAY_MS,
    Credit,
    MemberView,
    Rules,
    Standing,
    activity_of,
    credit,
    crossed_milestones,
    in_audience,
    points_for,
    ranked,
    referral_credit,
    retention,
    top_winners,
    validate_definition,
)
from shared.clock import epoch_ms as to_ms
from shared.events import Attended, Audience, HoursApproved, PostCreated, ReferralMade

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def rules(**over) -> Rules:
    base = dict(
        campaign_id="c1",
        audience=Audience(),
        scoring={"post-created": 2, "referral-made": 10, "hours-approved": 3},
        milestones=(10, 20),
        window_start_ms=to_ms(T0),
        window_end_ms=to_ms(T0 + timedelta(days=30)),
    )
    base.update(over)
    return Rules(**base)


def member(**over) -> MemberView:
    base = dict(
        member_id="m1", region="moscow", roles=("volunteer",), level="active", status="active"
    )
    base.update(over)
    return MemberView(**base)


# -- window and audience -----------------------------------------------------------------------


def test_window_includes_its_start_and_excludes_its_end():
    r = rules()
    assert r.in_window(r.window_start_ms)
    assert not r.in_window(r.window_start_ms - 1)
    assert r.in_window(r.window_end_ms - 1)
    assert not r.in_window(r.window_end_ms)


def test_empty_audience_means_every_active_member():
    assert in_audience(Audience(), member())
    assert not in_audience(Audience(), member(status="left"))
    assert not in_audience(Audience(), member(status="erased"))


def test_audience_filters_by_region_role_and_minimum_level():
    audience = Audience(
        regions=["moscow", "kazan"], roles=["coordinator", "volunteer"], min_level="active"
    )
    assert in_audience(audience, member())
    assert in_audience(audience, member(level="ambassador"))
    assert not in_audience(audience, member(region="tver"))
    assert not in_audience(audience, member(roles=("partner",)))
    assert not in_audience(audience, member(level="participant"))


def test_a_member_without_level_changed_is_a_newcomer():
    view = MemberView.from_doc({"_id": "m1", "region": "moscow", "status": "active"})
    assert view.level == "newcomer"
    assert not in_audience(Audience(min_level="participant"), view)
    assert in_audience(Audience(min_level="newcomer"), view)


def test_a_member_not_joined_yet_is_unknown():
    assert not MemberView.from_doc({"_id": "m1", "level": "loyal"}).known


# -- from events to points ---------------------------------------------------------------------


def test_post_scores_its_points_at_its_creation_time():
    post = PostCreated(post_id="p1", author_id="m1", kind="post", title="t", created_at=T0)
    activity = activity_of("post-created", "e1", T0 + timedelta(hours=1), post)
    assert activity is not None
    assert (activity.member_id, activity.at_ms, activity.key) == ("m1", to_ms(T0), "e1")
    assert points_for(rules(), activity) == 2


def test_hours_score_points_per_approved_hour():
    hours = HoursApproved(
        entry_id="h1",
        member_id="m1",
        hours=2.5,
        activity="food bank",
        date=T0.date(),
        approved_by="m9",
    )
    activity = activity_of("hours-approved", "e2", T0, hours)
    assert activity is not None
    assert points_for(rules(), activity) == 7.5


def attended(shift_id: str = "s1", hours: float = 4.0, **over) -> Attended:
    body = dict(
        activity_id="a1",
        shift_id=shift_id,
        member_id="m1",
        checked_in_at=T0 + timedelta(hours=2),
        hours=hours,
        recorded_by="m9",
    )
    body.update(over)
    return Attended(**body)


def test_an_attendance_scores_per_attendance_at_its_check_in_whatever_its_hours():
    r = rules(scoring={"attended": 5})
    long, short = attended(hours=7.5), attended("s2", hours=0)
    a = activity_of("attended", "e1", T0 + timedelta(days=3), long)
    b = activity_of("attended", "e2", T0 + timedelta(days=3), short)
    assert a is not None and b is not None
    assert (a.member_id, a.at_ms, a.hours) == ("m1", to_ms(T0 + timedelta(hours=2)), 7.5)
    assert points_for(r, a) == points_for(r, b) == 5
    assert points_for(rules(), a) == 0  # a campaign that does not score attendance


def test_a_second_attended_for_the_same_member_and_shift_is_the_same_credit():
    first = activity_of("attended", "e1", T0, attended(hours=2))
    correction = activity_of("attended", "e2", T0, attended(hours=3))
    other_member = activity_of("attended", "e3", T0, attended(member_id="m2"))
    other_shift = activity_of("attended", "e4", T0, attended("s2"))
    assert first is not None and correction is not None
    assert other_member is not None and other_shift is not None
    assert first.key == correction.key
    assert len({first.key, other_member.key, other_shift.key}) == 3
    standing = Standing("m1")
    for a in (first, correction, first):
        standing = standing.credit(a.key, 5, a.at_ms)
    assert standing.points == 5


def test_an_event_type_not_in_scoring_scores_nothing():
    post = PostCreated(post_id="p1", author_id="m1", kind="post", title="t", created_at=T0)
    activity = activity_of("post-created", "e1", T0, post)
    assert activity is not None
    assert points_for(rules(scoring={"referral-made": 5}), activity) == 0


def test_a_referral_is_keyed_by_the_referred_member_so_the_first_referrer_keeps_it():
    ref = ReferralMade(referral_id="r1", referrer_id="m1", referred_id="m2", code="X", at=T0)
    again = ReferralMade(referral_id="r2", referrer_id="m3", referred_id="m2", code="Y", at=T0)
    a = activity_of("referral-made", "e1", T0, ref)
    b = activity_of("referral-made", "e2", T0, again)
    assert a is not None and b is not None
    assert a.key == b.key and a.referred_id == "m2"


def test_an_active_counted_referral_scores_only_once_the_referred_member_acts_in_window():
    r = rules()  # `active` is the default
    assert r.count_referrals == "active"
    ref = ReferralMade(referral_id="r1", referrer_id="m1", referred_id="m2", code="X", at=T0)
    activity = activity_of("referral-made", "e1", T0, ref)
    assert activity is not None
    assert points_for(r, activity) == 0
    assert referral_credit(r, to_ms(T0), None) is None
    later = to_ms(T0 + timedelta(days=2))
    assert referral_credit(r, to_ms(T0), later) == later
    assert referral_credit(r, to_ms(T0), r.window_end_ms + 1) is None
    # A campaign created with `joined` before it was refused: scores when made, never later.
    legacy = rules(count_referrals="joined")
    assert points_for(legacy, activity) == 10
    assert referral_credit(legacy, to_ms(T0), later) is None


def test_a_new_campaign_cannot_count_referrals_at_the_sign_up():
    problems = validate_definition(
        T0, T0 + timedelta(days=1), {"referral-made": 10}, [], 1, T0, count_referrals="joined"
    )
    assert len(problems) == 1 and "'joined' is no longer accepted" in problems[0]
    ok = validate_definition(T0, T0 + timedelta(days=1), {"referral-made": 10}, [], 1, T0)
    assert ok == []


# -- standings ---------------------------------------------------------------------------------

credits = st.lists(
    st.builds(
        Credit,
        member_id=st.sampled_from(["m1", "m2", "m3", "m4"]),
        key=st.sampled_from([f"e{i}" for i in range(12)]),
        points=st.sampled_from([1.0, 2.0, 2.5, 10.0]),
        at_ms=st.integers(0, 10_000),
    ),
    max_size=40,
)


def standings_from(items: list[Credit]) -> dict[str, Standing]:
    """Fold credits into standings with the rule production runs (`domain.credit`), each
    credit on its own: any order, any repetition must give the same result."""
    table: dict[str, Standing] = {}
    for c in items:
        before = table.get(c.member_id, Standing(c.member_id))
        table[c.member_id], _ = credit(rules(), before, [c])
    return table


def _consistent(items: list[Credit]) -> list[Credit]:
    # One event is one fact: the same key always carries the same points and time per member.
    first: dict[tuple[str, str], Credit] = {}
    for c in items:
        first.setdefault((c.member_id, c.key), c)
    return [first[(c.member_id, c.key)] for c in items]


@given(credits, st.randoms(use_true_random=False))
def test_a_permutation_of_the_same_events_gives_the_same_standings(items, rnd):
    items = _consistent(items)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert standings_from(items) == standings_from(shuffled)


@given(credits)
def test_redelivered_events_do_not_change_the_standings(items):
    items = _consistent(items)
    assert standings_from(items + items[::-1]) == standings_from(items)


@given(credits)
def test_points_are_the_sum_of_distinct_events_and_reached_is_the_latest(items):
    items = _consistent(items)
    table = standings_from(items)
    for member_id, standing in table.items():
        distinct = {c.key: c for c in items if c.member_id == member_id}
        assert standing.points == round(sum(c.points for c in distinct.values()), 2)
        assert standing.reached_ms == max(c.at_ms for c in distinct.values())


@given(
    st.lists(st.sampled_from([1.0, 2.0, 5.0, 7.5]), max_size=30),
    st.lists(st.integers(1, 60), max_size=6, unique=True),
)
def test_each_milestone_is_reached_once_and_only_when_passed(steps, milestones):
    milestones = sorted(milestones)
    reached: list[int] = []
    total = 0.0
    for step in steps:
        after = round(total + step, 2)
        reached += crossed_milestones(milestones, total, after, reached)
        total = after
    assert reached == [m for m in milestones if m <= total]


def test_ties_go_to_who_reached_the_score_first():
    late = Standing("a", 10, reached_ms=500)
    early = Standing("b", 10, reached_ms=100)
    high = Standing("c", 12, reached_ms=900)
    zero = Standing("d", 0, reached_ms=0)
    assert [s.member_id for s in ranked([late, early, high, zero])] == ["c", "b", "a"]
    winners = top_winners([late, early, high], 2)
    assert [(w.member_id, w.rank) for w in winners] == [("c", 1), ("b", 2)]


@given(
    st.lists(
        st.tuples(st.sampled_from([1.0, 2.0, 3.0]), st.integers(0, 50)), min_size=1, max_size=20
    )
)
def test_ranking_is_by_points_then_earliest_and_never_depends_on_input_order(rows):
    table = [Standing(f"m{i}", p, t) for i, (p, t) in enumerate(rows)]
    order = ranked(table)
    assert order == ranked(random.Random(1).sample(table, len(table)))
    for a, b in itertools.pairwise(order):
        assert (a.points > b.points) or (a.points == b.points and a.reached_ms <= b.reached_ms)


# -- validation and report ---------------------------------------------------------------------


def test_a_valid_definition_has_no_problems():
    assert (
        validate_definition(
            T0, T0 + timedelta(days=1), {"post-created": 1}, [5, 10], 1, T0 - timedelta(days=1)
        )
        == []
    )


def test_a_challenge_may_score_attendance_but_not_an_unknown_kind_of_it():
    now = T0 - timedelta(days=1)
    end = T0 + timedelta(days=30)
    assert validate_definition(T0, end, {"attended": 5}, [15], 1, now) == []
    assert "unknown event types ['attended-hours']" in " ".join(
        validate_definition(T0, end, {"attended-hours": 2}, [15], 1, now)
    )


def test_invalid_definitions_say_what_is_wrong():
    problems = validate_definition(
        T0, T0, {"reaction-added": 1}, [10, 5], 0, T0 + timedelta(days=2)
    )
    text = " ".join(problems)
    for expected in (
        "ends_at must be after starts_at",
        "past",
        "unknown event types",
        "strictly ascending",
        "winners",
    ):
        assert expected in text


def test_retention_counts_activity_30_days_after_joining():
    joined = to_ms(T0)
    assert retention(joined, joined + 31 * DAY_MS, joined + 40 * DAY_MS) == "active"
    assert retention(joined, joined + 5 * DAY_MS, joined + 40 * DAY_MS) == "inactive"
    assert retention(joined, joined + 5 * DAY_MS, joined + 10 * DAY_MS) == "too-early"
    assert retention(joined, None, joined + 40 * DAY_MS) == "inactive"
