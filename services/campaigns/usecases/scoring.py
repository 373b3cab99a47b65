"""Scoring use cases: what members and engagement did, into activity facts and standings.

Each takes a run of events (`consumers.runs`: events that may be handled at once with the
result of handling them one after the other) and does its reads and writes for the whole run:
one read of the open campaigns, one of the members, the activity facts in one unordered
insert, the credits in one bulk write of the standings. One event on its own is a run of one,
so the consumer's fallback (one by one, when a batch fails) runs the same rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from services.campaigns.domain import (
    REFERRAL_ACTIVATING,
    Activity,
    Credit,
    MemberView,
    Rules,
    activity_of,
    in_audience,
    points_for,
    referral_credit,
    referral_key,
)
from services.campaigns.repositories import CampaignsUnitOfWork
from services.campaigns.store import CampaignsStore
from services.campaigns.usecases.credit import Award, standing_write
from shared.clock import Clock, epoch_ms, now_ms
from shared.documents import Doc
from shared.events import CloudEvent, EventData, LevelChanged, MemberLeft
from shared.http import forget_requests_of
from shared.projection import MemberProjection
from shared.skipped import SkippedDocuments

log = logging.getLogger("sarafan.campaigns")

#: What this service keeps of a member (beside status, times and level): for the audience.
PROJECTED_FIELDS = ("display_name", "region", "roles")

Run = Sequence[tuple[CloudEvent, EventData]]
#: An activity with the event it came from (whose correlation its milestone events follow).
Scored = tuple[CloudEvent, Activity]
#: An activity with the open campaigns whose window holds its time.
InWindow = tuple[CloudEvent, Activity, list[Rules]]
#: An activity that counts in a campaign (in its window and audience, recorded).
Counted = tuple[CloudEvent, Activity, Rules]


class UnknownMember(Exception):
    """An event names a member whose member-joined has not reached us yet (the two streams
    are not ordered with each other): a later try may find them."""


def activities(run: Run) -> list[Scored]:
    return [
        (event, activity)
        for event, data in run
        if (activity := activity_of(event.type, event.id, event.time, data)) is not None
    ]


def _fact_id(campaign_id: str, key: str) -> str:
    """An activity fact is keyed by its campaign and its activity's key: recorded once."""
    return f"{campaign_id}:{key}"


def _fact(campaign_id: str, activity: Activity) -> Doc:
    fact: Doc = {
        "_id": _fact_id(campaign_id, activity.key),
        "campaign_id": campaign_id,
        "type": activity.kind,
        "member_id": activity.member_id,
        "key": activity.key,
        "at_ms": activity.at_ms,
        "hours": activity.hours,
    }
    if activity.referred_id is not None:
        fact["referred_id"] = activity.referred_id
    return fact


def _award(
    cause: CloudEvent, rules: Rules, member_id: str, key: str, points: float, at: int
) -> Award:
    return Award(rules, Credit(member_id, key, points, at, correlation_id=cause.correlationid))


class Scoring:
    """The scoring use cases, with what they need: the store, a unit of work for the writes
    that carry events, and the count of stored documents they had to leave out."""

    def __init__(
        self,
        store: CampaignsStore,
        unit_of_work: Callable[[], CampaignsUnitOfWork],
        skipped: SkippedDocuments,
        clock: Clock,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.skipped = skipped
        self.clock = clock
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    async def members_changed(self, run: Run) -> None:
        """Members joined, changed, left or referred someone: project first (a referral in
        the run may name a member who joined in it), in one ordered bulk write with the
        joined times (`joined_at_ms`), then score the run's activities."""
        await self.projection.apply_many(data for _, data in run)
        for _, data in run:
            if isinstance(data, MemberLeft) and data.erase:
                # The projection forgot the member's name; the Idempotency-Key records of
                # requests about them go too (a replayed response would still show what they
                # held). Standings and facts keep only the anonymous id.
                await forget_requests_of(self.store.idempotency, data.member_id)
        await self.score(activities(run))

    async def engagement_happened(self, run: Run) -> None:
        """Levels changed (rare, one write each, guarded by the level's time), then members
        posted, commented, had answers accepted or hours approved: score those."""
        for event, data in run:
            if isinstance(data, LevelChanged):
                await self.store.set_level(data.member_id, data.new_level, epoch_ms(event.time))
        await self.members_acted(run)

    async def members_acted(self, run: Run) -> None:
        """Members did something a campaign may score (posted, had hours approved, attended a
        shift): their latest activity noted, then scored, with referrals counted as `active`."""
        scored = activities(run)
        if not scored:
            return
        # First our own facts, then look for the referrals: with the referral's scoring doing
        # the reverse, at least one of the two sees the other whatever order they run in.
        await self.store.touch_many([(a.member_id, a.at_ms) for _, a in scored])
        await self.score(scored, activate=True)

    async def score(self, scored: Sequence[Scored], *, activate: bool = False) -> None:
        """Record each activity in each campaign that holds its time and counts its member,
        and credit the points; with `activate`, referrals counted as `active` whose referred
        member just did something score too."""
        in_window = await self._in_window(scored)
        if not in_window:
            return
        counted = await self._record(in_window)
        awards = await self._earned(counted)
        if activate:
            awards += await self._activated_referrals(in_window)
        await self.credit(awards)

    async def credit(self, awards: Sequence[Award]) -> None:
        """Credit each award once (`domain.credit`): one read of the standings, one unordered
        bulk write (an insert or a version-guarded write per standing, with its milestone
        events), then the standings another writer changed meanwhile read again and credited
        again, until none is left (idempotent per key: a credit that did apply is found
        applied). The unit of work publishes the milestone events once written."""
        groups: dict[str, list[Award]] = {}
        for award in awards:
            groups.setdefault(award.standing_id, []).append(award)
        at_ms = now_ms(self.clock)
        async with self.unit_of_work() as uow:
            while groups:
                docs = await self.store.standings_by_id(list(groups))
                writes = [
                    write.write
                    for sid, group in groups.items()
                    if (write := standing_write(docs.get(sid), group, at_ms)) is not None
                ]
                # Committed here: the standings that lost a race are read again next round.
                step = uow.standings.write(writes)
                await uow.commit(step)
                lost = {writes[i].doc_id for i in step.refused}
                groups = {sid: groups[sid] for sid in lost}

    def _rules(self, docs: Sequence[Doc]) -> list[Rules]:
        """The scoring rules of the open campaigns; one whose document cannot be read is left
        out (logged, counted) rather than failing every event for every campaign."""
        rules = []
        for doc in docs:
            try:
                rules.append(Rules.from_doc(doc))
            except Exception as exc:
                self.skipped.skip("campaigns", doc.get("_id"), exc, "scoring")
        return rules

    async def _in_window(self, scored: Sequence[Scored]) -> list[InWindow]:
        """Each activity with the open campaigns whose window holds its time: one read of
        the campaigns open at some time of the run."""
        if not scored:
            return []
        first, last = min(a.at_ms for _, a in scored), max(a.at_ms for _, a in scored)
        campaigns = self._rules(await self.store.open_between(first, last))
        return [
            (cause, activity, windows)
            for cause, activity in scored
            if (windows := [r for r in campaigns if r.in_window(activity.at_ms)])
        ]

    async def _record(self, in_window: Sequence[InWindow]) -> list[Counted]:
        """Store a fact per activity and campaign whose audience holds its member; returns
        those that count: a fact recorded before by the same member (a redelivery) counts,
        a referral of a member already credited to another referrer does not."""
        members = await self.store.members_by_id({a.member_id for _, a, _ in in_window})
        facts: list[tuple[CloudEvent, Activity, Rules, Doc]] = []
        for cause, activity, windows in in_window:
            view = MemberView.from_doc(
                members.get(activity.member_id) or {"_id": activity.member_id}
            )
            if not view.known:
                raise UnknownMember(
                    f"member {activity.member_id} is not known yet (member-joined pending)"
                )
            facts += [
                (cause, activity, rules, _fact(rules.campaign_id, activity))
                for rules in windows
                if in_audience(rules.audience, view)
            ]
        stored = await self.store.record_many([fact for *_, fact in facts])
        return [
            (cause, activity, rules)
            for cause, activity, rules, fact in facts
            if stored.get(fact["_id"], fact).get("member_id") == activity.member_id
        ]

    async def _earned(self, counted: Sequence[Counted]) -> list[Award]:
        """The points the counted activities earn, and the referrals counted as `active`
        whose referred member had already done something."""
        # Read after the facts are stored (see engagement_happened): the referred member's
        # first activity, for referrals counted as `active`.
        referred = await self.store.members_by_id(
            {
                a.referred_id
                for _, a, rules in counted
                if a.referred_id is not None and rules.count_referrals == "active"
            },
            {"first_active_ms": 1},
        )
        awards = []
        for cause, activity, rules in counted:
            points = points_for(rules, activity)
            if points > 0:
                awards.append(
                    _award(cause, rules, activity.member_id, activity.key, points, activity.at_ms)
                )
            if activity.referred_id is not None:
                first_active = (referred.get(activity.referred_id) or {}).get("first_active_ms")
                at = referral_credit(rules, activity.at_ms, first_active)
                if at is not None:
                    points = rules.scoring["referral-made"]
                    awards.append(
                        _award(cause, rules, activity.member_id, activity.key, points, at)
                    )
        return awards

    async def _activated_referrals(self, in_window: Sequence[InWindow]) -> list[Award]:
        """The referred members did something: their referrals counted as `active` score
        now. A referral fact's id is `<campaign>:referral:<referred>`: one read by id."""
        wanted = [
            (cause, activity, rules)
            for cause, activity, windows in in_window
            if activity.kind in REFERRAL_ACTIVATING
            for rules in windows
            if rules.count_referrals == "active" and "referral-made" in rules.scoring
        ]
        if not wanted:
            return []
        found = await self.store.facts_by_id(
            _fact_id(rules.campaign_id, referral_key(activity.member_id))
            for _, activity, rules in wanted
        )
        awards = []
        for cause, activity, rules in wanted:
            referral = found.get(_fact_id(rules.campaign_id, referral_key(activity.member_id)))
            if referral is None or referral.get("type") != "referral-made":
                continue
            at = referral_credit(rules, int(referral["at_ms"]), activity.at_ms)
            if at is not None:
                points = rules.scoring["referral-made"]
                member, key = referral["member_id"], referral["key"]
                awards.append(_award(cause, rules, member, key, points, at))
        return awards
