"""Campaigns event handlers: the members projection, and scoring events into standings."""

from __future__ import annotations

import logging

from services.campaigns.domain import (
    REFERRAL_ACTIVATING,
    Activity,
    MemberView,
    Rules,
    activity_of,
    in_audience,
    points_for,
    referral_credit,
    to_ms,
)
from services.campaigns.lifecycle import rules_of
from services.campaigns.store import CampaignsStore, Doc
from shared.bus import Consumer, TransientError
from shared.events import (
    CloudEvent,
    EventData,
    LevelChanged,
    MemberJoined,
    MilestoneReached,
    new_event,
    utcnow,
)
from shared.outbox import Relay
from shared.projection import MemberProjection

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


class UnknownMember(TransientError):
    """An event names a member whose member-joined has not reached us yet: retry later."""


class CampaignsHandlers:
    def __init__(self, store: CampaignsStore, relay: Relay) -> None:
        self.store = store
        self.relay = relay
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="campaigns-members",
                stream="MEMBERS",
                subjects=MEMBER_SUBJECTS,
                handle=self.on_member_event,
            ),
            Consumer(
                name="campaigns-engagement",
                stream="ENGAGEMENT",
                subjects=ENGAGEMENT_SUBJECTS,
                handle=self.on_engagement_event,
            ),
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.projection.apply(data)
        if isinstance(data, MemberJoined):
            await self.store.set_joined(data.member_id, to_ms(data.joined_at))
        activity = activity_of(event.type, event.id, event.time, data)
        if activity is not None:
            await self.score(event, activity)

    async def on_engagement_event(self, event: CloudEvent, data: EventData) -> None:
        if isinstance(data, LevelChanged):
            await self.store.set_level(data.member_id, data.new_level, to_ms(event.time))
            return
        activity = activity_of(event.type, event.id, event.time, data)
        if activity is None:
            return
        # First our own fact, then look for the referral: with the referral handler doing the
        # reverse, at least one of the two sees the other whatever order they run in.
        await self.store.touch(activity.member_id, activity.at_ms)
        await self.score(event, activity)
        if activity.kind in REFERRAL_ACTIVATING:
            await self.activate_referrals(event, activity)

    # -- scoring ---------------------------------------------------------------------------------

    async def score(self, cause: CloudEvent, activity: Activity) -> None:
        """Record the activity in each campaign that holds its time and counts its member."""
        campaigns = await self.store.accepting(activity.at_ms)
        if not campaigns:
            return
        member = await self._member(activity.member_id)
        for doc in campaigns:
            rules = rules_of(doc)
            if not in_audience(rules.audience, member):
                continue
            stored = await self.store.record(_fact(rules.campaign_id, activity))
            if stored is not None and stored.get("member_id") != activity.member_id:
                continue  # a referral of the same member already credited to another referrer
            points = points_for(rules, activity)
            if points > 0:
                await self.credit(
                    cause, rules, activity.member_id, activity.key, points, activity.at_ms
                )
            if activity.referred_id is not None:
                referred = await self.store.member(activity.referred_id) or {}
                at = referral_credit(rules, activity.at_ms, referred.get("first_active_ms"))
                if at is not None:
                    await self.credit(
                        cause,
                        rules,
                        activity.member_id,
                        activity.key,
                        rules.scoring["referral-made"],
                        at,
                    )

    async def activate_referrals(self, cause: CloudEvent, activity: Activity) -> None:
        """The referred member did something: referrals counted as `active` score now."""
        campaigns = {
            doc["_id"]: rules_of(doc)
            for doc in await self.store.accepting(activity.at_ms)
            if doc.get("count_referrals") == "active"
            and "referral-made" in (doc.get("scoring") or {})
        }
        if not campaigns:
            return
        for referral in await self.store.referrals_of(activity.member_id, list(campaigns)):
            rules = campaigns[referral["campaign_id"]]
            at = referral_credit(rules, int(referral["at_ms"]), activity.at_ms)
            if at is not None:
                await self.credit(
                    cause,
                    rules,
                    referral["member_id"],
                    referral["key"],
                    rules.scoring["referral-made"],
                    at,
                )

    async def credit(
        self, cause: CloudEvent, rules: Rules, member_id: str, key: str, points: float, at_ms: int
    ) -> None:
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

        credited = await self.store.credit(
            rules.campaign_id,
            member_id,
            key,
            points,
            at_ms,
            to_ms(utcnow()),
            list(rules.milestones),
            milestone_events,
        )
        if credited is None:
            log.info("%s already credited to %s in %s", key, member_id, rules.campaign_id)
            return
        if credited.events:
            self.relay.kick(self.store.standings, f"{rules.campaign_id}:{member_id}")

    async def _member(self, member_id: str) -> MemberView:
        doc = await self.store.member(member_id)
        view = MemberView.from_doc(doc or {"_id": member_id})
        if not view.known:
            raise UnknownMember(f"member {member_id} is not known yet (member-joined pending)")
        return view


def _fact(campaign_id: str, activity: Activity) -> Doc:
    fact: Doc = {
        "_id": f"{campaign_id}:{activity.key}",
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
