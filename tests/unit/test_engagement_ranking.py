"""The segments' rank keys (services/engagement/ranking.py): stored once when a score changes,
they order members as their decayed scores do at any later moment, ties by id."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.engagement import domain, ranking
from services.engagement.record import Record
from shared.store import epoch_ms
from tests.properties import examples

RULES = domain.Rules()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KINDS = ["post", "question", "comment", "reaction_received", "joined", "referral", "hour"]
#: Scores this close are a tie for the check: both are sums of floats, the key a log of one.
TOLERANCE = 1e-9

history = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 60 * 24 * 300),  # minutes before the member's last change
        st.sampled_from([1.0, 1.5, 3.0]),
    ),
    min_size=1,
    max_size=25,
)
member = st.tuples(history, st.integers(0, 60 * 24 * 200))  # and minutes before NOW it was written


def written(member_id: str, facts: list[tuple[str, int, float]], before_now: int) -> Record:
    """The member's record as the write at their last change left it."""
    at = NOW - timedelta(minutes=before_now)
    return Record().add(
        [
            domain.Fact(f"e{i}:{kind}", member_id, kind, at - timedelta(minutes=m), amount)
            for i, (kind, m, amount) in enumerate(facts)
        ],
        RULES,
        at,
    )


@settings(max_examples=examples(80), deadline=None)
@given(
    st.lists(member, min_size=2, max_size=8),
    st.lists(st.integers(0, 7), max_size=3),
    st.integers(0, 60 * 24 * 500),
)
def test_the_stored_key_orders_members_as_their_decayed_scores_at_any_later_moment(
    members, twins, later
) -> None:
    # Some members exactly alike but for their id: a tie, broken by the id.
    members = members + [members[i % len(members)] for i in twins]
    records = {f"m{i:02d}": written(f"m{i:02d}", facts, t) for i, (facts, t) in enumerate(members)}
    keys = {m: ranking.score_key(m, r.log_score(RULES)) for m, r in records.items()}
    assert len(set(keys.values())) == len(keys)  # unique: no second sort key needed
    moment = NOW + timedelta(minutes=later)  # any moment after every member's last change
    ordered = sorted(records, key=keys.__getitem__)
    for a, b in itertools.pairwise(ordered):
        score_a, score_b = records[a].score(moment, RULES), records[b].score(moment, RULES)
        assert score_a >= score_b * (1 - TOLERANCE), (a, b, score_a, score_b)
        if records[a].log_score(RULES) == records[b].log_score(RULES):
            assert a < b  # a tie: by member id, whatever the moment


@settings(max_examples=examples(60), deadline=None)
@given(history, st.integers(0, 60 * 24 * 100), st.integers(1, 60 * 24 * 400))
def test_the_key_does_not_change_while_the_score_only_decays(facts, before_now, later) -> None:
    record = written("m", facts, before_now)
    settled = record.add([], RULES, NOW + timedelta(minutes=later))  # old days folded
    first, again = record.log_score(RULES), settled.log_score(RULES)
    assert first is not None and again is not None
    assert math.isclose(first, again, rel_tol=0, abs_tol=1e-9)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.integers(0, 2**42)), min_size=2, max_size=10))
def test_newcomers_rank_by_score_then_newest_then_id(rows) -> None:
    keyed = [
        (ranking.newcomer_key(f"m{i}", lscore, joined), (-lscore, -joined, f"m{i}"))
        for i, (lscore, joined) in enumerate(rows)
    ]
    assert [k for _, k in sorted(keyed)] == sorted(k for _, k in keyed)


def test_a_member_without_a_readable_score_sorts_last() -> None:
    keys = [ranking.score_key("a", None), ranking.score_key("b", "high"),
            ranking.score_key("c", -500.0)]  # fmt: skip
    assert sorted(keys)[0] == keys[2]


def test_each_segment_key_is_set_only_while_the_member_is_in_the_segment() -> None:
    now_ms = epoch_ms(NOW)
    day = 86_400_000
    doc = {"active": 1, "level": "loyal", "lscore": 5.0, "last_ms": now_ms - 20 * day,
           "joined_ms": now_ms - 10 * day}  # fmt: skip
    keys, unset = ranking.segment_keys("m", doc, NOW, RULES)
    assert set(keys) == {"keys_v", "loyal_key", "drift_key", "new_key"} and unset == []
    assert ranking.keys_due(doc, NOW, RULES) == now_ms + 20 * day + 1  # the window closes
    fresh = {**doc, "last_ms": now_ms - day, "joined_ms": now_ms - 40 * day, "level": "active"}
    keys, unset = ranking.segment_keys("m", fresh, NOW, RULES)
    assert set(keys) == {"keys_v"} and set(unset) == {"loyal_key", "drift_key", "new_key"}
    gone = {**doc, "active": 0}
    assert set(ranking.segment_keys("m", gone, NOW, RULES)[0]) == {"keys_v"}
