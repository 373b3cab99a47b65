"""The engagement rules: weights, decay, levels with a demotion buffer, drift, streaks."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.engagement import domain
from services.engagement.domain import LEVELS, Fact, Rules
from services.engagement.record import Record
from shared.clock import epoch_ms
from shared.events import (
    AnswerAccepted,
    CommentAdded,
    HoursApproved,
    MemberJoined,
    PostCreated,
    ReactionAdded,
    ReferralMade,
)
from tests.fakes import engagement as reference
from tests.properties import examples

RULES = Rules()
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
KINDS = st.sampled_from(domain.KINDS)
OFFSETS = st.integers(min_value=0, max_value=400 * 24 * 3600)  # seconds before `now`


def facts_strategy(max_size: int = 30) -> st.SearchStrategy[list[Fact]]:
    fact = st.builds(
        lambda i, kind, offset, amount: Fact(
            f"e{i}:{kind}", "m1", kind, T0 - timedelta(seconds=offset), amount
        ),
        st.integers(0, 10**6),
        KINDS,
        OFFSETS,
        st.floats(min_value=0.25, max_value=12),
    )
    return st.lists(fact, max_size=max_size)


# -- weights and facts ----------------------------------------------------------------------------


def test_spec_default_weights() -> None:
    assert {k: RULES.weight(k) for k in ("post", "question", "comment", "reaction_received")} == {
        "post": 5, "question": 3, "comment": 2, "reaction_received": 1,
    }  # fmt: skip
    assert (RULES.weight("answer_accepted"), RULES.weight("referral"), RULES.weight("joined")) == (
        10, 15, 1,
    )  # fmt: skip
    assert RULES.weight("hour") == 2


def test_each_event_becomes_the_facts_of_the_members_it_credits() -> None:
    def facts(data: object) -> list[tuple[str, str, float]]:
        return [
            (f.member_id, f.kind, f.points(RULES)) for f in domain.facts_from_event("e", T0, data)
        ]  # type: ignore[arg-type]

    joined = MemberJoined.model_validate({**MemberJoined.example, "member_id": "a"})
    assert facts(joined) == [("a", "joined", 1)]
    # A referral scores when the friend first does something (referral_credits), not at join.
    assert facts(ReferralMade.model_validate(ReferralMade.example)) == []
    story = PostCreated.model_validate({**PostCreated.example, "kind": "story"})
    assert facts(story) == [("m_01", "post", 5)]
    assert facts(PostCreated.model_validate(PostCreated.example)) == [("m_01", "question", 3)]
    assert facts(CommentAdded.model_validate(CommentAdded.example)) == [("m_02", "comment", 2)]
    assert facts(ReactionAdded.model_validate(ReactionAdded.example)) == [
        ("m_02", "reaction_given", 0),
        ("m_01", "reaction_received", 1),
    ]
    assert facts(AnswerAccepted.model_validate(AnswerAccepted.example)) == [
        ("m_02", "answer_accepted", 10)
    ]
    assert facts(HoursApproved.model_validate(HoursApproved.example)) == [("m_01", "hour", 7.0)]


def test_reacting_to_ones_own_post_earns_nothing() -> None:
    own = ReactionAdded.model_validate({**ReactionAdded.example, "member_id": "m_01"})
    facts = domain.facts_from_event("e", T0, own)
    assert [(f.kind, f.points(RULES)) for f in facts] == [("reaction_given", 0)]


def test_fact_ids_are_derived_from_the_cause_event() -> None:
    data = ReactionAdded.model_validate(ReactionAdded.example)
    first = domain.facts_from_event("evt-1", T0, data)
    again = domain.facts_from_event("evt-1", T0 + timedelta(hours=1), data)
    assert (
        [f.id for f in first]
        == [f.id for f in again]
        == [
            "evt-1:reaction_given",
            "evt-1:reaction_received",
        ]
    )


# -- referrals ------------------------------------------------------------------------------------

FRIENDS = {
    "friend": {"status": "active", "referred_by": "anna"},
    "anna": {"status": "active", "referred_by": None},
    "gone_friend": {"status": "left", "referred_by": "anna"},
    "erased_friend": {"status": "erased"},
    "friend_of_gone": {"status": "active", "referred_by": "gone"},
    "gone": {"status": "left"},
}


def test_a_referral_counts_once_the_friend_first_does_something_that_counts() -> None:
    facts = [
        Fact("e1:reaction_given", "friend", "reaction_given", T0),  # not enough
        Fact("e2:comment", "friend", "comment", T0 + timedelta(hours=2)),
        Fact("e3:post", "friend", "post", T0 + timedelta(hours=1)),
    ]
    [credit] = domain.referral_credits(facts, FRIENDS)
    assert credit == Fact("referral:friend", "anna", "referral", T0 + timedelta(hours=1))
    assert credit.points(RULES) == 15
    # Only a reaction, or only joining: nothing yet.
    assert domain.referral_credits(facts[:1], FRIENDS) == []
    assert domain.referral_credits([Fact("e", "friend", "joined", T0)], FRIENDS) == []


@pytest.mark.parametrize("kind", sorted(domain.REFERRAL_ACTIVATING))
def test_each_activating_kind_makes_the_referral_count(kind: str) -> None:
    [credit] = domain.referral_credits([Fact(f"e:{kind}", "friend", kind, T0)], FRIENDS)
    assert (credit.member_id, credit.id) == ("anna", "referral:friend")


def test_no_referral_counts_for_a_friend_or_referrer_who_left_or_was_erased() -> None:
    for member in ("gone_friend", "erased_friend", "friend_of_gone", "anna", "stranger"):
        facts = [Fact(f"e:{member}", member, "post", T0)]
        assert domain.referral_credits(facts, FRIENDS) == [], member


# -- decay ----------------------------------------------------------------------------------------


@given(st.floats(min_value=0.05, max_value=365), KINDS.filter(lambda k: RULES.weight(k) > 0))
def test_decay_halves_at_the_half_life(half_life_days: float, kind: str) -> None:
    rules = Rules(half_life=timedelta(days=half_life_days))
    fact = Fact("e", "m", kind, T0)
    at_once = reference.score([fact], T0, rules)
    later = reference.score([fact], T0 + rules.half_life, rules)
    two_later = reference.score([fact], T0 + 2 * rules.half_life, rules)
    assert at_once == fact.points(rules)
    assert later == pytest.approx(at_once / 2, rel=1e-12)
    assert two_later == pytest.approx(at_once / 4, rel=1e-12)


@given(facts_strategy(), OFFSETS)
def test_score_is_never_negative(facts: list[Fact], later: int) -> None:
    assert reference.score(facts, T0 + timedelta(seconds=later), RULES) >= 0


@given(facts_strategy(), st.randoms())
def test_score_does_not_depend_on_the_order_of_facts(facts: list[Fact], rnd: object) -> None:
    shuffled = list(facts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert reference.score(shuffled, T0, RULES) == reference.score(facts, T0, RULES)


@given(facts_strategy())
@settings(max_examples=examples(200))
def test_day_buckets_give_the_score_of_their_facts(facts: list[Fact]) -> None:
    buckets: dict[datetime, float] = defaultdict(float)
    for f in facts:
        buckets[domain.day_of(f.at)] += domain.bucket_mass(f, RULES)
    from_buckets = domain.score_of_buckets(buckets.items(), T0, RULES)
    assert from_buckets == pytest.approx(reference.score(facts, T0, RULES), rel=1e-9, abs=1e-9)


MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(KINDS, st.floats(min_value=0.25, max_value=24), MOMENTS, MOMENTS, st.integers(0, 10**6))
@settings(max_examples=examples(300))
def test_no_fact_is_worth_more_than_its_points_whenever_it_is_dated(
    kind: str, amount: float, at: datetime, now: datetime, later_seconds: int
) -> None:
    """A fact dated after `now` (a clock ahead, a forged date: 2100 once gave 10^268) counts as
    happening now: its score is bounded by its points, now and at any later time."""
    fact = Fact("e:x", "m", kind, at, amount)
    bound = fact.points(RULES) * (1 + 1e-9)
    later = now + timedelta(seconds=later_seconds)
    assert domain.as_of(fact, now).at <= now
    assert reference.score([fact], now, RULES) <= bound
    record = Record().add([fact], RULES, now)
    assert record.score(now, RULES) <= bound
    assert record.score(later, RULES) <= bound
    assert (record.last_ms or 0) <= epoch_ms(now)


@given(facts_strategy(), st.integers(0, 80 * 365 * 86400))
def test_a_record_is_never_worth_more_than_the_points_of_its_facts(
    facts: list[Fact], ahead_seconds: int
) -> None:
    # The same facts moved into the future (as far as 2100): bounded by their points.
    moved = [replace(f, at=f.at + timedelta(seconds=ahead_seconds)) for f in facts]
    record = Record().add(moved, RULES, T0)
    assert record.score(T0, RULES) <= math.fsum(f.points(RULES) for f in facts) * (1 + 1e-9)


def test_buckets_older_than_the_horizon_weigh_almost_nothing() -> None:
    old = Fact("e", "m", "referral", reference.score_horizon(T0, RULES) - timedelta(seconds=1))
    assert reference.score([old], T0, RULES) < 1e-10


# -- levels ---------------------------------------------------------------------------------------

LEVEL = st.sampled_from(LEVELS)
SCORES = st.floats(min_value=0, max_value=1000, allow_nan=False)


@given(LEVEL, SCORES)
def test_promotion_and_demotion_respect_the_buffer(current: str, score: float) -> None:
    new = domain.next_level(current, score, RULES)
    rank, new_rank = LEVELS.index(current), LEVELS.index(new)
    if new_rank > rank:  # promoted: the new level's threshold is reached
        assert score >= RULES.threshold(new)
    if new_rank < rank:  # demoted: below 90% of the threshold of the level held
        assert score < RULES.demotion_buffer * RULES.threshold(current)
    # Whatever happened, the level kept is within the buffer and no promotion is missed.
    assert score >= RULES.demotion_buffer * RULES.threshold(new)
    if new_rank + 1 < len(LEVELS):
        assert score < RULES.threshold(LEVELS[new_rank + 1]) or new_rank < rank
    assert new_rank >= LEVELS.index(domain.level_for(score, RULES))


@given(st.sampled_from(LEVELS[1:]), st.floats(min_value=0.9, max_value=0.9999))
def test_a_score_hovering_under_the_threshold_does_not_flap(level: str, fraction: float) -> None:
    threshold = RULES.threshold(level)
    held = domain.next_level(LEVELS[0], threshold, RULES)
    assert held == level
    for score in (threshold * fraction, threshold, threshold * fraction, threshold * 0.95):
        held = domain.next_level(held, score, RULES)
        assert held == level


def test_demotion_below_the_buffer_goes_as_far_as_the_score_says() -> None:
    assert domain.next_level("loyal", 53.9, RULES) == "active"  # 0.9 × 60 = 54
    assert domain.next_level("loyal", 54.0, RULES) == "loyal"
    assert domain.next_level("ambassador", 3.0, RULES) == "newcomer"
    assert domain.next_level("ambassador", 4.6, RULES) == "participant"  # 0.9 × 5 = 4.5


@given(
    st.lists(KINDS, max_size=40),
    st.randoms(),
    st.sampled_from(LEVELS),
)
def test_order_of_events_with_the_same_time_does_not_change_score_or_level(
    kinds: list[str], rnd: object, start: str
) -> None:
    facts = [Fact(f"e{i}", "m", kind, T0) for i, kind in enumerate(kinds)]
    shuffled = list(facts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert reference.replay(shuffled, RULES, start) == reference.replay(facts, RULES, start)


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Rules(thresholds={"participant": 5, "active": 4, "loyal": 60, "ambassador": 150})
    with pytest.raises(ValueError, match="unknown activity"):
        Rules(weights={"likes": 1})
    with pytest.raises(ValueError, match="negative"):
        Rules(weights={"post": -1})
    with pytest.raises(ValueError, match="at least one reaction"):
        Rules(reactions=())
    with pytest.raises(ValueError, match="without spaces"):
        Rules(reactions=("two words",))
    with pytest.raises(ValueError, match="twice"):
        Rules(reactions=("Like", "like"))
    with pytest.raises(ValueError, match="half-life"):
        Rules(half_life=timedelta(minutes=5))


# -- drift, streaks, figures ----------------------------------------------------------------------


def test_drifting_means_active_or_above_and_inactive_for_the_drift_period() -> None:
    long_ago = T0 - timedelta(days=14)
    assert domain.is_drifting("active", long_ago, T0, RULES)
    assert domain.is_drifting("ambassador", long_ago, T0, RULES)
    assert not domain.is_drifting("participant", long_ago, T0, RULES)
    assert not domain.is_drifting("loyal", long_ago + timedelta(seconds=1), T0, RULES)
    assert not domain.is_drifting("loyal", None, T0, RULES)
    assert domain.days_inactive(long_ago, T0) == 14


def test_streak_counts_consecutive_days_up_to_today_or_yesterday() -> None:
    today = date(2026, 11, 27)
    days = [date(2026, 11, d) for d in (20, 24, 25, 26)]
    assert domain.streak(days, today) == 3  # today not over yet: the streak holds
    assert domain.streak([*days, today], today) == 4
    assert domain.streak(days, date(2026, 11, 28)) == 0
    assert domain.streak([], today) == 0


def test_unanswered_after_the_configured_hours() -> None:
    asked = T0 - timedelta(hours=24)
    assert domain.is_unanswered(asked, answered=False, now=T0, rules=RULES)
    assert not domain.is_unanswered(asked, answered=True, now=T0, rules=RULES)
    assert not domain.is_unanswered(asked + timedelta(minutes=1), False, T0, RULES)


def test_ratio_and_median_are_undefined_without_data() -> None:
    assert domain.ratio(0, 0) is None
    assert domain.ratio(1, 4) == 0.25
    assert domain.median([]) is None
    assert domain.median([30, 10, 20, 1000]) == 25
    assert domain.median([1.0]) == 1.0
