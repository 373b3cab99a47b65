"""A member's engagement record: facts in any order give one record, folding keeps the score
exact, windows and streaks count whole UTC days, the stored keys order members as scores do."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.engagement import domain
from services.engagement.record import KEEP_DAYS, Record, demote_at, figures
from shared.store import epoch_ms
from tests.fakes import engagement as reference
from tests.properties import examples

RULES = domain.Rules()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KINDS = ["post", "question", "comment", "reaction_received", "joined", "referral"]

facts_strategy = st.lists(
    st.builds(
        lambda i, kind, minutes: domain.Fact(
            f"e{i}:{kind}", "m1", kind, NOW - timedelta(minutes=minutes)
        ),
        st.integers(0, 10_000),
        st.sampled_from(KINDS),
        st.integers(0, 60 * 24 * 200),
    ),
    max_size=40,
    unique_by=lambda f: f.id,
)


@settings(max_examples=examples(60), deadline=None)
@given(facts_strategy, st.randoms())
def test_facts_in_any_order_and_batches_give_the_same_record(facts, rnd) -> None:
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    at_once = Record().add(facts, RULES, NOW)
    one_by_one = Record()
    for f in shuffled:
        one_by_one = one_by_one.add([f], RULES, NOW)
    assert one_by_one.counts == at_once.counts
    assert one_by_one.points_total == pytest.approx(at_once.points_total)
    assert one_by_one.score(NOW, RULES) == pytest.approx(
        at_once.score(NOW, RULES), rel=1e-9, abs=1e-12
    )
    assert at_once.score(NOW, RULES) == pytest.approx(
        reference.score(facts, NOW, RULES), rel=1e-9, abs=1e-12
    )


@settings(max_examples=examples(40), deadline=None)
@given(facts_strategy, st.integers(0, 400))
def test_folding_old_days_into_the_base_keeps_the_score(facts, days_later) -> None:
    later = NOW + timedelta(days=days_later)
    record = Record().add(facts, RULES, NOW).folded(later, RULES)
    assert all(k >= f"{(later - timedelta(days=KEEP_DAYS)):%Y%m%d}" for k in record.days)
    exact = reference.score(facts, later, RULES)
    assert record.score(later, RULES) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_a_redelivered_fact_adds_nothing() -> None:
    fact = domain.Fact("e1:post", "m1", "post", NOW)
    record = Record().add([fact], RULES, NOW)
    assert record.add([fact], RULES, NOW + timedelta(hours=1)) == record.add(
        [], RULES, NOW + timedelta(hours=1)
    )


def test_windows_count_whole_utc_days_and_say_when_they_change() -> None:
    facts = [
        domain.Fact("a:post", "m1", "post", NOW),  # today
        domain.Fact("b:post", "m1", "post", domain.day_of(NOW) - timedelta(days=6)),  # 7d edge
        domain.Fact("c:post", "m1", "post", NOW - timedelta(days=7)),  # outside 7d
    ]
    record = Record().add(facts, RULES, NOW)
    points, count, until = record.window(NOW, 7)
    assert (points, count) == (10, 2)
    assert until == epoch_ms(domain.day_of(NOW) + timedelta(days=1))  # b leaves tomorrow
    assert record.window(NOW, 30)[:2] == (15, 3)


def test_a_streak_continues_into_folded_days() -> None:
    facts = [
        domain.Fact(f"e{d}:comment", "m1", "comment", NOW - timedelta(days=d)) for d in range(100)
    ]
    record = Record().add(facts, RULES, NOW)
    assert len(record.days) <= KEEP_DAYS + 1
    assert record.streak(NOW.date()) == 100


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(facts_strategy, min_size=2, max_size=5))
def test_the_stored_log_score_orders_members_as_their_scores_do(histories) -> None:
    records = [Record().add(h, RULES, NOW) for h in histories]
    keyed = [(r.log_score(RULES), r.score(NOW, RULES)) for r in records]
    keyed = [(lscore, score) for lscore, score in keyed if lscore is not None]
    for (la, sa), (lb, sb) in itertools.pairwise(keyed):
        if not math.isclose(sa, sb, rel_tol=1e-9):
            assert (la < lb) == (sa < sb)


def test_decay_demotes_at_the_announced_time() -> None:
    facts = [domain.Fact(f"e{i}:post", "m1", "post", NOW) for i in range(5)]  # 25: active
    record = Record().add(facts, RULES, NOW)
    when = demote_at("active", record.score(NOW, RULES), NOW, RULES)
    assert when is not None
    moment = datetime.fromtimestamp(when / 1000, UTC)
    line = RULES.demotion_buffer * RULES.threshold("active")
    assert record.score(moment, RULES) < line <= record.score(moment - timedelta(seconds=1), RULES)
    assert demote_at("newcomer", 1.0, NOW, RULES) is None


def test_rank_keys_are_set_only_for_windows_with_facts() -> None:
    old = [domain.Fact("e1:post", "m1", "post", NOW - timedelta(days=10))]
    derived = figures("m1", Record().add(old, RULES, NOW), "participant", NOW, RULES)
    assert "rank_all" in derived.fields and "rank30" in derived.fields
    assert "rank7" in derived.unset
    assert derived.fields["due_ms"] <= epoch_ms(NOW + timedelta(days=21))


def test_random_histories_of_a_year_stay_small() -> None:
    rnd = random.Random(7)
    facts = [
        domain.Fact(f"e{i}:post", "m1", "post", NOW - timedelta(days=rnd.randrange(365)))
        for i in range(2000)
    ]
    record = Record().add(facts, RULES, NOW)
    assert len(record.days) <= KEEP_DAYS + 1
    assert record.points_total == 2000 * 5
