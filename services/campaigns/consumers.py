"""Campaigns event handlers: the members projection, and scoring events into standings.

Both consumers take a fetched batch at once (`handle_batch`): the projection in one ordered
bulk write, one read of the open campaigns, the batch's activity facts in one unordered
insert, its credits in one bulk write of the standings. One event on its own is a batch of
one, so the wrapper's fallback (one by one, when a batch fails) runs the same rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from services.campaigns.domain import (
    REFERRAL_ACTIVATING,
    Activity,
    MemberView,
    Rules,
    activity_of,
    in_audience,
    points_for,
    referral_credit,
    referral_key,
    to_ms,
)
from services.campaigns.lifecycle import rules_of
from services.campaigns.store import CampaignsStore, CreditRequest, Doc
from shared.bus import Consumer, TransientError
from shared.events import (
    CloudEvent,
    EventData,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    MilestoneReached,
    new_event,
    utcnow,
)
from shared.http import forget_requests_of
from shared.outbox import Relay
from shared.projection import MemberProjection
from shared.skipped import SkippedDocuments

log = logging.getLogger("sarafan.campaigns")

PROJECTED_FIELDS = ("display_name", "region", "roles")
MEMBER_SUBJECTS = [
    "members.member-joined.*",
    "members.member-updated.*",
    "members.member-left.*",
    "members.referral-made.*",
]
ENGAGEMENT_SUBJECTS = [
    "engagement.post-created.*",
    "engagement.comment-added.*",
    "engagement.answer-accepted.*",
    "engagement.hours-approved.*",
    "engagement.level-changed.*",
]

Batch = Sequence[tuple[CloudEvent, EventData]]
Scored = tuple[CloudEvent, Activity]


class UnknownMember(TransientError):
    """An event names a member whose member-joined has not reached us yet: retry later."""


def runs(batch: Batch, changes_member: Callable[[EventData], str | None]) -> list[Batch]:
    """The batch cut into runs that can each be handled at once with the result of handling
    their events one after the other.

    A run applies every change to the members it holds first, then scores its activities.
    That is the same as in order unless a change comes after an activity of the member it
    changes (a member-updated after their referral, a level-changed after their post, the
    referred member leaving after the referral): the audience is judged when the event is
    handled, so such a change starts the next run.
    """
    cut: list[Batch] = []
    current: list[tuple[CloudEvent, EventData]] = []
    actors: set[str] = set()
    for event, data in batch:
        changed = changes_member(data)
        if changed is not None and changed in actors:
            cut.append(current)
            current, actors = [], set()
        current.append((event, data))
        activity = activity_of(event.type, event.id, event.time, data)
        if activity is not None:
            actors.add(activity.member_id)
            if activity.referred_id is not None:
                actors.add(activity.referred_id)
    if current:
        cut.append(current)
    return cut


def activities(run: Batch) -> list[Scored]:
    return [
        (event, activity)
        for event, data in run
        if (activity := activity_of(event.type, event.id, event.time, data)) is not None
    ]


def _projected_member(data: EventData) -> str | None:
    if isinstance(data, (MemberJoined, MemberUpdated, MemberLeft)):
        return data.member_id
    return None


def _levelled_member(data: EventData) -> str | None:
    return data.member_id if isinstance(data, LevelChanged) else None


class CampaignsHandlers:
    def __init__(
        self,
        store: CampaignsStore,
        relay: Relay,
        batch_size: int = 100,
        skipped: SkippedDocuments | None = None,
    ) -> None:
        self.store = store
        self.relay = relay
        self.batch_size = batch_size
        self.skipped = skipped or SkippedDocuments("campaigns", CollectorRegistry())
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="campaigns-members",
                stream="MEMBERS",
                subjects=MEMBER_SUBJECTS,
                handle=self.on_member_event,
                handle_batch=self.on_member_batch,
                batch_size=self.batch_size,
            ),
            Consumer(
                name="campaigns-engagement",
                stream="ENGAGEMENT",
                subjects=ENGAGEMENT_SUBJECTS,
                handle=self.on_engagement_event,
                handle_batch=self.on_engagement_batch,
                batch_size=self.batch_size,
            ),
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.on_member_batch([(event, data)])

    async def on_member_batch(self, batch: Batch) -> None:
        """Project first (a referral in the batch may name a member who joined in it), in
        one ordered bulk write with the joined times, then score the run's activities."""
        for run in runs(batch, _projected_member):
            # The projection keeps the joined time (`joined_at_ms`) in the same write.
            await self.projection.apply_many(data for _, data in run)
            for _, data in run:
                if isinstance(data, MemberLeft) and data.erase:
                    # The projection forgot the member's name; the Idempotency-Key records
                    # of requests about them go too (a replayed response would still show
                    # what they held). Standings and facts keep only the anonymous id.
                    await forget_requests_of(self.store.idempotency, data.member_id)
            await self.score_many(activities(run))

    async def on_engagement_event(self, event: CloudEvent, data: EventData) -> None:
        await self.on_engagement_batch([(event, data)])

    async def on_engagement_batch(self, batch: Batch) -> None:
        for run in runs(batch, _levelled_member):
            for event, data in run:
                if isinstance(data, LevelChanged):
                    # Rare, and guarded by the level's time: one read and write each.
                    await self.store.set_level(data.member_id, data.new_level, to_ms(event.time))
            scored = activities(run)
            if not scored:
                continue
            # First our own facts, then look for the referrals: with the referral handler
            # doing the reverse, at least one of the two sees the other whatever order they
            # run in.
            await self.store.touch_many([(a.member_id, a.at_ms) for _, a in scored])
            await self.score_many(scored, activate=True)

    # -- scoring ---------------------------------------------------------------------------------

    async def score_many(self, scored: Sequence[Scored], *, activate: bool = False) -> None:
        """Record each activity in each campaign that holds its time and counts its member,
        and credit the points; with `activate`, referrals counted as `active` whose referred
        member just did something score too."""
        if not scored:
            return
        first, last = min(a.at_ms for _, a in scored), max(a.at_ms for _, a in scored)
        campaigns = self._rules(await self.store.open_between(first, last))
        if not campaigns:
            return
        in_window = [
            (cause, activity, windows)
            for cause, activity in scored
            if (windows := [r for r in campaigns if r.in_window(activity.at_ms)])
        ]
        if not in_window:
            return
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
        counted = [
            (cause, activity, rules)
            for cause, activity, rules, fact in facts
            # A referral of the same member already credited to another referrer.
            if stored.get(fact["_id"], fact).get("member_id") == activity.member_id
        ]
        requests: list[CreditRequest] = []
        # Read after the facts are stored (see on_engagement_batch): the referred member's
        # first activity, for referrals counted as `active`.
        referred = await self.store.members_by_id(
            {
                a.referred_id
                for _, a, rules in counted
                if a.referred_id is not None and rules.count_referrals == "active"
            },
            {"first_active_ms": 1},
        )
        for cause, activity, rules in counted:
            points = points_for(rules, activity)
            if points > 0:
                requests.append(
                    _request(cause, rules, activity.member_id, activity.key, points, activity.at_ms)
                )
            if activity.referred_id is not None:
                first_active = (referred.get(activity.referred_id) or {}).get("first_active_ms")
                at = referral_credit(rules, activity.at_ms, first_active)
                if at is not None:
                    requests.append(
                        _request(
                            cause,
                            rules,
                            activity.member_id,
                            activity.key,
                            rules.scoring["referral-made"],
                            at,
                        )
                    )
        if activate:
            requests += await self._activated_referrals(in_window)
        kicks = await self.store.credit_many(requests, to_ms(utcnow()))
        for standing_id, events in kicks.items():
            self.relay.kick(self.store.standings, standing_id, events)

    def _rules(self, docs: Sequence[Doc]) -> list[Rules]:
        """The scoring rules of the open campaigns; one whose document cannot be read is left
        out (logged, counted) rather than failing every event for every campaign."""
        rules = []
        for doc in docs:
            try:
                rules.append(rules_of(doc))
            except Exception as exc:
                self.skipped.skip("campaigns", doc.get("_id"), exc, "scoring")
        return rules

    async def _activated_referrals(
        self, in_window: Sequence[tuple[CloudEvent, Activity, list[Rules]]]
    ) -> list[CreditRequest]:
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
        requests = []
        for cause, activity, rules in wanted:
            referral = found.get(_fact_id(rules.campaign_id, referral_key(activity.member_id)))
            if referral is None or referral.get("type") != "referral-made":
                continue
            at = referral_credit(rules, int(referral["at_ms"]), activity.at_ms)
            if at is not None:
                requests.append(
                    _request(
                        cause,
                        rules,
                        referral["member_id"],
                        referral["key"],
                        rules.scoring["referral-made"],
                        at,
                    )
                )
        return requests


def _request(
    cause: CloudEvent, rules: Rules, member_id: str, key: str, points: float, at_ms: int
) -> CreditRequest:
    def milestone_events(crossed: list[int], total: float) -> list[CloudEvent]:
        return [
            new_event(
                MilestoneReached(
                    campaign_id=rules.campaign_id,
                    member_id=member_id,
                    milestone=m,
                    points=total,
                ),
                correlation_id=cause.correlationid,
            )
            for m in crossed
        ]

    return CreditRequest(
        rules.campaign_id, member_id, key, points, at_ms, tuple(rules.milestones), milestone_events
    )


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
