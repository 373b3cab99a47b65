"""Engagement rules with no I/O and no clock: weights, decayed score, levels, drift, streaks."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.engagement.contributions import DEFAULT_REACTIONS, reaction_form
from shared.events import (
    LEVELS,
    AnswerAccepted,
    CommentAdded,
    EventData,
    HoursApproved,
    MemberJoined,
    MemberLeft,
    PostCreated,
    ReactionAdded,
)

#: Levels from which a member who stops being active is "drifting"; the loyal pool.
DRIFT_LEVELS: tuple[str, ...] = ("active", "loyal", "ambassador")
LOYAL_LEVELS: tuple[str, ...] = ("loyal", "ambassador")

#: Kinds of activity and their default weights. `hour` is per approved volunteer hour;
#: `reaction_given` is activity (it keeps a member from drifting) that scores nothing by default.
DEFAULT_WEIGHTS: dict[str, float] = {
    "post": 5,
    "question": 3,
    "comment": 2,
    "reaction_received": 1,
    "reaction_given": 0,
    "answer_accepted": 10,
    "referral": 15,
    "joined": 1,
    "hour": 2,
}
KINDS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)
#: Kinds that are not participation: joining scores but does not make a member "active".
PASSIVE_KINDS = frozenset({"joined"})
#: What a referred member does that makes their referral count: the referrer earns `referral`
#: when the friend first does one of these, not when the friend signs up (a sign-up costs
#: nothing to fake). Another kind of activity that should count is one more name here.
REFERRAL_ACTIVATING: frozenset[str] = frozenset(
    {"post", "question", "comment", "answer_accepted", "hour"}
)
#: Kinds a member earns once ever per cause (a referral per referred member): their fact ids
#: are kept for good in the member's record, not only for the redelivery horizon.
ONCE_KINDS: frozenset[str] = frozenset({"referral"})
#: Score a member needs to be promoted to each level (newcomer is everyone's start).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "participant": 5,
    "active": 25,
    "loyal": 60,
    "ambassador": 150,
}
DEMOTION_BUFFER = 0.9  # demote only below 90% of the held level's threshold (as Discourse does)


@dataclass(frozen=True)
class Rules:
    """The configurable parts of the rules; the defaults are the platform's (docs/engagement.md)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    half_life: timedelta = timedelta(days=30)
    demotion_buffer: float = DEMOTION_BUFFER
    drift_after: timedelta = timedelta(days=14)
    unanswered_after: timedelta = timedelta(hours=24)
    new_member_window: timedelta = timedelta(days=30)
    #: The reactions members may give (a closed set: see contributions.allowed_reaction).
    reactions: tuple[str, ...] = DEFAULT_REACTIONS

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown activity kinds in weights: {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("activity weights cannot be negative")
        if set(self.thresholds) != set(LEVELS[1:]):
            raise ValueError(f"thresholds must name exactly {list(LEVELS[1:])}")
        ordered = [self.thresholds[level] for level in LEVELS[1:]]
        if any(t <= 0 for t in ordered) or ordered != sorted(set(ordered)):
            raise ValueError("level thresholds must be positive and strictly increasing")
        if not 0 < self.demotion_buffer <= 1:
            raise ValueError("the demotion buffer is a fraction in (0, 1]")
        if self.half_life < timedelta(hours=1):
            # Day buckets hold sum(w * 2^(t_in_day / half_life)); shorter half-lives overflow.
            raise ValueError("the half-life must be at least one hour")
        check_reactions(self.reactions)

    def weight(self, kind: str) -> float:
        return float(self.weights.get(kind, DEFAULT_WEIGHTS[kind]))

    def threshold(self, level: str) -> float:
        return 0.0 if level == LEVELS[0] else float(self.thresholds[level])


def check_reactions(reactions: Sequence[str]) -> None:
    """The configured reactions: at least one, each one as a request may give it (1 to 32
    characters, no spaces), no two the same reaction."""
    if not reactions:
        raise ValueError("at least one reaction must be allowed")
    for reaction in reactions:
        if not 0 < len(reaction) <= 32 or any(c.isspace() for c in reaction):
            raise ValueError(f"a reaction is 1 to 32 characters without spaces: {reaction!r}")
    forms = [reaction_form(r) for r in reactions]
    if len(set(forms)) != len(forms):
        raise ValueError("the same reaction is listed twice")


# ---------------------------------------------------------------------------------------------
# Facts: what a member did, when, worth how much


@dataclass(frozen=True)
class Fact:
    """One scored or activity-only deed of a member. `id` is deterministic (cause event + kind),
    so recording the same fact twice is recognisable; `amount` is hours for `hour`, else 1."""

    id: str
    member_id: str
    kind: str
    at: datetime
    amount: float = 1.0

    def points(self, rules: Rules) -> float:
        return rules.weight(self.kind) * self.amount

    @property
    def participation(self) -> bool:
        return self.kind not in PASSIVE_KINDS


def facts_from_event(event_id: str, event_time: datetime, data: EventData) -> list[Fact]:
    """What an event means for members' scores; events without a time of their own use the
    envelope's (set once when the event was created, so a redelivery gives the same facts).
    referral-made scores nothing by itself: see `referral_credits`."""
    facts = FACTS_OF.get(type(data))
    return facts(_FactsOf(event_id, event_time), data) if facts is not None else []


@dataclass(frozen=True)
class _FactsOf:
    """One event's facts: each id is the event's and the kind's."""

    event_id: str
    event_time: datetime

    def __call__(self, member_id: str, kind: str, at: datetime, amount: float = 1.0) -> Fact:
        return Fact(f"{self.event_id}:{kind}", member_id, kind, at, amount)


def _joined(fact: _FactsOf, data: MemberJoined) -> list[Fact]:
    return [fact(data.member_id, "joined", data.joined_at)]


def _posted(fact: _FactsOf, data: PostCreated) -> list[Fact]:
    return [
        fact(data.author_id, "question" if data.kind == "question" else "post", data.created_at)
    ]


def _commented(fact: _FactsOf, data: CommentAdded) -> list[Fact]:
    return [fact(data.author_id, "comment", data.created_at)]


def _reacted(fact: _FactsOf, data: ReactionAdded) -> list[Fact]:
    given = [fact(data.member_id, "reaction_given", data.created_at)]
    if data.member_id == data.post_author_id:  # reacting to one's own post earns nothing
        return given
    return [*given, fact(data.post_author_id, "reaction_received", data.created_at)]


def _accepted(fact: _FactsOf, data: AnswerAccepted) -> list[Fact]:
    return [fact(data.answerer_id, "answer_accepted", fact.event_time)]


def _hours(fact: _FactsOf, data: HoursApproved) -> list[Fact]:
    return [fact(data.member_id, "hour", fact.event_time, data.hours)]


#: The facts of each event type that scores (`facts_from_event`).
FACTS_OF: dict[type[EventData], Callable[[_FactsOf, Any], list[Fact]]] = {
    MemberJoined: _joined,
    PostCreated: _posted,
    CommentAdded: _commented,
    ReactionAdded: _reacted,
    AnswerAccepted: _accepted,
    HoursApproved: _hours,
}


def referral_fact(friend_id: str, referrer_id: str, at: datetime) -> Fact:
    """The referrer's credit for a friend: one id per friend, whatever activity causes it."""
    return Fact(f"referral:{friend_id}", referrer_id, "referral", at)


def referral_credits(facts: Iterable[Fact], members: Mapping[str, Mapping[str, Any]]) -> list[Fact]:
    """The referrals that count now. A referred member among the facts' members who did
    something in REFERRAL_ACTIVATING makes their referrer earn `referral`, dated at that first
    activity (the earliest in `facts`), if both are still members: `members` holds the
    projection (status, referred_by) of those members and of their referrers. A friend who
    left or was erased before doing anything never counts. Recorded once ever (ONCE_KINDS)."""
    first: dict[str, datetime] = {}
    for f in facts:
        if f.kind in REFERRAL_ACTIVATING:
            first[f.member_id] = min(f.at, first.get(f.member_id, f.at))
    credits = []
    for friend_id, at in first.items():
        friend = members.get(friend_id) or {}
        referrer_id = friend.get("referred_by")
        if friend.get("status") != "active" or not referrer_id or referrer_id == friend_id:
            continue
        if (members.get(referrer_id) or {}).get("status") != "active":
            continue
        credits.append(referral_fact(friend_id, referrer_id, at))
    return credits


# ---------------------------------------------------------------------------------------------
# Score with exponential time decay


def decay_factor(age: timedelta, half_life: timedelta) -> float:
    """2^(-age/half_life): 1 now, 1/2 after one half-life, never above 1: a negative age (a
    time after `now`) counts as now, so no fact is ever worth more than its points."""
    return math.pow(2.0, -max(age / half_life, 0.0))


def as_of(fact: Fact, now: datetime) -> Fact:
    """The fact as it is scored at `now`: one dated later (a clock ahead, a forged or mistyped
    time) happened, at the latest, now. Without this a fact dated in 2100 would be worth its
    points times 2^(years / half-life), some 10^268 times its weight."""
    return fact if fact.at <= now else replace(fact, at=now)


def day_of(at: datetime) -> datetime:
    """Start of the UTC day holding `at`: facts are stored in one bucket per member and day."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def bucket_mass(fact: Fact, rules: Rules) -> float:
    """A fact's share of its day bucket: points grown to the fact's time from the day's start.

    A bucket stores the sum of these, so its score at any later time is one multiplication
    (`score_of_buckets`) and adding a fact is an `$inc`, whatever the order facts arrive in.
    """
    return fact.points(rules) * math.pow(2.0, (fact.at - day_of(fact.at)) / rules.half_life)


def score_of_buckets(
    buckets: Iterable[tuple[datetime, float]], now: datetime, rules: Rules
) -> float:
    """The score from (day start, summed bucket mass) pairs: Σ points × 2^(−age / half-life)
    over the facts the buckets hold, whatever the order they came in."""
    return math.fsum(mass * decay_factor(now - day, rules.half_life) for day, mass in buckets)


# ---------------------------------------------------------------------------------------------
# Levels with a demotion buffer


def level_for(score_value: float, rules: Rules) -> str:
    """The highest level whose threshold the score reaches (no hysteresis)."""
    reached = LEVELS[0]
    for level in LEVELS[1:]:
        if score_value >= rules.threshold(level):
            reached = level
    return reached


def next_level(current: str, score_value: float, rules: Rules) -> str:
    """The level after seeing `score_value`: promoted as soon as a threshold is reached, demoted
    only once the score is below `demotion_buffer` × the threshold of the level held, so that a
    member hovering around a threshold does not flap between two levels."""
    target = level_for(score_value, rules)
    rank = LEVELS.index(current)
    if LEVELS.index(target) >= rank:
        return target
    while rank > 0 and score_value < rules.demotion_buffer * rules.threshold(LEVELS[rank]):
        rank -= 1
    return LEVELS[rank]


def rank_of(level: str) -> int:
    return LEVELS.index(level)


# ---------------------------------------------------------------------------------------------
# The community's counted members


def counted(status: str | None, referred: bool, data: EventData) -> tuple[str, dict[str, int]]:
    """A member's counted status after a member event, and the change it makes to the
    community's counters (members now, joins, joins by referral), from the status before it."""
    joined = 1 if status in ("active", "left") else 0
    if isinstance(data, MemberJoined):
        if status is None:
            return "active", {"members": 1, "joins": 1, "referred": int(bool(data.referred_by))}
        return status, {}
    if isinstance(data, MemberLeft):
        if data.erase and status != "erased":
            members = -1 if status == "active" else 0
            return "erased", {"members": members, "joins": -joined, "referred": -joined * referred}
        if not data.erase and status == "active":
            return "left", {"members": -1}
    return status or "", {}


# ---------------------------------------------------------------------------------------------
# Drift, streaks, unanswered questions, figures


def days_inactive(last_active: datetime, now: datetime) -> int:
    return max(int((now - last_active) / timedelta(days=1)), 0)


def is_drifting(level: str, last_active: datetime | None, now: datetime, rules: Rules) -> bool:
    """Active or above, and no participation for `drift_after`."""
    return (
        level in DRIFT_LEVELS and last_active is not None and now - last_active >= rules.drift_after
    )


def streak(active_days: Iterable[date], today: date) -> int:
    """Consecutive UTC days with activity, ending today (or yesterday: today is not over)."""
    days = set(active_days)
    cursor = today if today in days else today - timedelta(days=1)
    count = 0
    while cursor in days:
        count += 1
        cursor -= timedelta(days=1)
    return count


def is_unanswered(created_at: datetime, answered: bool, now: datetime, rules: Rules) -> bool:
    return not answered and now - created_at >= rules.unanswered_after


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None
