"""Campaign rules as pure code: window, audience, what an event scores, milestones, winners."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from shared.clock import epoch_ms
from shared.events import (
    LEVELS,
    AnswerAccepted,
    Attended,
    Audience,
    CommentAdded,
    EventData,
    HoursApproved,
    MemberJoined,
    MilestoneReached,
    PostCreated,
    ReferralMade,
)

Status = Literal["scheduled", "active", "ended", "cancelled"]
WinnerRule = Literal["top", "draw"]
CountReferrals = Literal["joined", "active"]

#: Event types a campaign may score, in the order docs/campaigns.md names them.
SCORABLE = (
    "post-created",
    "comment-added",
    "answer-accepted",
    "referral-made",
    "hours-approved",
    "member-joined",
    "attended",
)
#: What counts as "the referred member did something" for `count_referrals: active` (as in
#: engagement: a post, a comment, an accepted answer, approved hours, attending a shift). One
#: more kind of activity is one more name here.
REFERRAL_ACTIVATING = frozenset(
    {"post-created", "comment-added", "answer-accepted", "hours-approved", "attended"}
)
#: How referrals count in new campaigns. `joined` (a referral scores at the sign-up) is kept
#: only so that campaigns created with it before still read and score by their own rules:
#: three throwaway sign-ups made a referrer win, so a new campaign cannot choose it.
COUNT_REFERRALS_ACCEPTED: tuple[CountReferrals, ...] = ("active",)
#: Points are kept to two decimals so that sums and the draw's canonical form are exact.
POINTS_DECIMALS = 2


def round_points(points: float) -> float:
    return round(points + 0.0, POINTS_DECIMALS)


# ---------------------------------------------------------------------------------------------
# The campaign as the rules see it


@dataclass(frozen=True)
class Rules:
    """What decides scoring in one campaign; the window is [window_start_ms, window_end_ms)."""

    campaign_id: str
    audience: Audience
    scoring: Mapping[str, float]
    milestones: tuple[int, ...] = ()
    winners: int = 1
    winner_rule: WinnerRule = "top"
    count_referrals: CountReferrals = "active"
    window_start_ms: int = 0
    window_end_ms: int = 0

    def in_window(self, at_ms: int) -> bool:
        return self.window_start_ms <= at_ms < self.window_end_ms

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Rules:
        """The rules of a stored campaign (raises on a document that cannot be read)."""
        return cls(
            campaign_id=doc["_id"],
            audience=Audience.model_validate(doc.get("audience") or {}),
            scoring={k: float(v) for k, v in (doc.get("scoring") or {}).items()},
            milestones=tuple(int(m) for m in doc.get("milestones") or ()),
            winners=int(doc.get("winners") or 1),
            winner_rule=doc.get("winner_rule", "top"),
            count_referrals=doc.get("count_referrals", "active"),
            window_start_ms=int(doc["window_start_ms"]),
            window_end_ms=int(doc["window_end_ms"]),
        )


def validate_definition(
    starts_at: datetime,
    ends_at: datetime,
    scoring: Mapping[str, float],
    milestones: Sequence[int],
    winners: int,
    now: datetime,
    count_referrals: str = "active",
) -> list[str]:
    """Problems with a new campaign's definition, in words a client can act on."""
    problems = []
    if count_referrals not in COUNT_REFERRALS_ACCEPTED:
        problems.append(
            f"count_referrals {count_referrals!r} is no longer accepted: a referral scores once "
            "the referred member is active (posts, comments, has an answer accepted or hours "
            "approved), since sign-ups alone cost nothing to fake; use 'active'"
        )
    if ends_at <= starts_at:
        problems.append("ends_at must be after starts_at")
    if ends_at <= now:
        problems.append("ends_at is in the past: the campaign would never run")
    unknown = sorted(set(scoring) - set(SCORABLE))
    if unknown:
        problems.append(f"scoring names unknown event types {unknown}; known: {list(SCORABLE)}")
    if not scoring:
        problems.append("scoring must name at least one event type")
    if any(p <= 0 for p in scoring.values()):
        problems.append("scoring points must be positive")
    if any(m <= 0 for m in milestones):
        problems.append("milestones must be positive")
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        problems.append("milestones must be strictly ascending")
    if winners < 1:
        problems.append("winners must be at least 1")
    return problems


# ---------------------------------------------------------------------------------------------
# Audience


@dataclass(frozen=True)
class MemberView:
    """The campaigns service's own knowledge of a member (from member-* and level-changed)."""

    member_id: str
    region: str | None = None
    roles: tuple[str, ...] = ()
    level: str = "newcomer"
    status: str | None = None  # None: not joined yet as far as this service knows

    @property
    def known(self) -> bool:
        return self.status is not None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> MemberView:
        return cls(
            member_id=str(doc["_id"]),
            region=doc.get("region"),
            roles=tuple(doc.get("roles") or ()),
            level=doc.get("level") or "newcomer",
            status=doc.get("status"),
        )


def level_at_least(level: str, minimum: str) -> bool:
    rank = {name: i for i, name in enumerate(LEVELS)}
    return rank.get(level, 0) >= rank[minimum]


def in_audience(audience: Audience, member: MemberView) -> bool:
    """Empty `regions`/`roles` mean everyone; a member must be active (not left or erased)."""
    if member.status != "active":
        return False
    if audience.regions and member.region not in audience.regions:
        return False
    if audience.roles and not set(audience.roles) & set(member.roles):
        return False
    return audience.min_level is None or level_at_least(member.level, audience.min_level)


# ---------------------------------------------------------------------------------------------
# From an event to an activity, from an activity to points


@dataclass(frozen=True)
class Activity:
    """One thing a member did that a campaign may count: who, what, when, and a unique key."""

    kind: str
    member_id: str
    at_ms: int
    key: str
    hours: float = 0.0
    referred_id: str | None = None


def activity_of(
    event_type: str, event_id: str, event_time: datetime, data: EventData
) -> Activity | None:
    """The activity an event records (None for events that never score).

    Times are when the thing happened: `created_at`, `at`, `joined_at`, an attendance's
    `checked_in_at`; answer-accepted and hours-approved carry no such time, so the event's own
    time (acceptance, approval) counts. A referral's key is the referred member, so the first
    referrer keeps the credit; an attendance's is its member and shift, so a second `attended`
    for the same shift (a correction) scores nothing more.
    """
    of = ACTIVITY_OF.get(type(data))
    return of(event_type, event_id, event_time, data) if of is not None else None


def _authored(kind: str, event_id: str, _: datetime, data: Any) -> Activity:
    return Activity(kind, data.author_id, epoch_ms(data.created_at), event_id)


def _referral(kind: str, _: str, __: datetime, data: ReferralMade) -> Activity:
    key = referral_key(data.referred_id)
    return Activity(kind, data.referrer_id, epoch_ms(data.at), key, referred_id=data.referred_id)


def _attended(kind: str, _: str, __: datetime, data: Attended) -> Activity:
    key = attended_key(data.shift_id, data.member_id)
    return Activity(kind, data.member_id, epoch_ms(data.checked_in_at), key, hours=data.hours)


#: The activity of each event type that scores (`activity_of`).
ACTIVITY_OF: dict[type[EventData], Callable[[str, str, datetime, Any], Activity]] = {
    PostCreated: _authored,
    CommentAdded: _authored,
    AnswerAccepted: lambda kind, ident, at, d: Activity(kind, d.answerer_id, epoch_ms(at), ident),
    HoursApproved: lambda kind, ident, at, d: Activity(
        kind, d.member_id, epoch_ms(at), ident, hours=d.hours
    ),
    ReferralMade: _referral,
    MemberJoined: lambda kind, ident, _, d: Activity(
        kind, d.member_id, epoch_ms(d.joined_at), ident
    ),
    Attended: _attended,
}


def referral_key(referred_id: str) -> str:
    return f"referral:{referred_id}"


def attended_key(shift_id: str, member_id: str) -> str:
    """One attendance per member and shift (a fact's id is its campaign and this key)."""
    return f"attended:{shift_id}:{member_id}"


def points_for(rules: Rules, activity: Activity) -> float:
    """Points the activity earns now; hours-approved earns its points per approved hour,
    attended per attendance (whatever its hours: "three shifts this month").

    With `count_referrals: active` a referral earns nothing when made: it earns when the
    referred member first does something inside the campaign (see `referral_credit`).
    """
    per = rules.scoring.get(activity.kind, 0)
    if not per:
        return 0.0
    if activity.kind == "referral-made" and rules.count_referrals == "active":
        return 0.0
    if activity.kind == "hours-approved":
        return round_points(per * activity.hours)
    return round_points(per)


def referral_credit(rules: Rules, referral_at_ms: int, first_active_ms: int | None) -> int | None:
    """When an `active`-counted referral scores: the referred member's first activity inside
    the campaign (never before the referral itself); None while they have done nothing."""
    if rules.count_referrals != "active" or not rules.scoring.get("referral-made"):
        return None
    if first_active_ms is None:
        return None
    at = max(first_active_ms, referral_at_ms)
    return at if rules.in_window(at) else None


# ---------------------------------------------------------------------------------------------
# Standings, milestones, winners


@dataclass(frozen=True)
class Standing:
    """A member's points in one campaign and when they reached them (ties go to the earlier),
    with the keys already credited and the milestones already reached."""

    member_id: str
    points: float = 0.0
    reached_ms: int = 0
    applied: frozenset[str] = field(default_factory=frozenset)
    milestones: frozenset[int] = field(default_factory=frozenset)

    def credit(self, key: str, points: float, at_ms: int) -> Standing:
        """Add points once per key; reaching the score is the latest credit's time."""
        if key in self.applied:
            return self
        return replace(
            self,
            points=round_points(self.points + points),
            reached_ms=max(self.reached_ms, at_ms),
            applied=self.applied | {key},
        )

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Standing:
        """The points and time of a stored standing (raises on one that cannot be read)."""
        return cls(str(doc["member_id"]), float(doc["points"]), int(doc["reached_ms"]))


@dataclass(frozen=True)
class Credit:
    """Points a member earned once per key (an event id, a referred member) at a time."""

    member_id: str
    key: str
    points: float
    at_ms: int
    #: The correlation id of the event that earned them: the events the credit raises follow
    #: it. Not part of the credit's identity (a re-published event is the same credit).
    correlation_id: str | None = field(default=None, compare=False)


#: A milestone-reached the rules raise, with the credit that passed the milestone.
Raised = tuple[MilestoneReached, Credit]


def credit(
    rules: Rules, standing: Standing, credits: Iterable[Credit]
) -> tuple[Standing, list[Raised]]:
    """Apply to a member's standing in a campaign the credits not applied yet (once per key,
    in their order); each milestone passed on the way is reached once, announced with the
    points of the credit that passed it. Returns the new standing and the events it raises;
    credits all applied before give back the same standing and no event."""
    raised: list[Raised] = []
    for c in credits:
        if c.key in standing.applied:
            continue
        after = standing.credit(c.key, c.points, c.at_ms)
        crossed = crossed_milestones(
            rules.milestones, standing.points, after.points, standing.milestones
        )
        if crossed:
            after = replace(after, milestones=after.milestones | frozenset(crossed))
        raised += [
            (
                MilestoneReached(
                    campaign_id=rules.campaign_id,
                    member_id=standing.member_id,
                    milestone=m,
                    points=after.points,
                ),
                c,
            )
            for m in crossed
        ]
        standing = after
    return standing, raised


def crossed_milestones(
    milestones: Sequence[int], before: float, after: float, already: Iterable[int] = ()
) -> list[int]:
    """Milestones reached by going from `before` to `after` points, not reached before."""
    done = set(already)
    return [m for m in milestones if before < m <= after and m not in done]


def ranked(standings: Iterable[Standing]) -> list[Standing]:
    """Points descending; ties: who reached the score first; then member id (stable)."""
    return sorted(
        (s for s in standings if s.points > 0),
        key=lambda s: (-s.points, s.reached_ms, s.member_id),
    )


@dataclass(frozen=True)
class Placing:
    member_id: str
    rank: int
    points: float


def top_winners(standings: Iterable[Standing], count: int) -> list[Placing]:
    return [Placing(s.member_id, i + 1, s.points) for i, s in enumerate(ranked(standings)[:count])]


# ---------------------------------------------------------------------------------------------
# Report

RETENTION_DAYS = 30
DAY_MS = 86_400_000


def retention(
    joined_ms: int, last_active_ms: int | None, now_ms: int, days: int = RETENTION_DAYS
) -> Literal["active", "inactive", "too-early"]:
    """Was a new member still active `days` after joining (any activity on or after that day)?"""
    mark = joined_ms + days * DAY_MS
    if last_active_ms is not None and last_active_ms >= mark:
        return "active"
    return "too-early" if now_ms < mark else "inactive"
