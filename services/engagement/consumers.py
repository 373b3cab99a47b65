"""Engagement's event handlers: the members projection, activity facts from both streams, and
the hours that attendance at activities proves.

Each durable consumer is declared once, and its event types get their handler in one line
(`on`); here each consumer's types share one handler on purpose, which takes a whole fetched
batch (the bus hands it one event at a time when a batch fails): a batch of member events is
one read of the projection, one insert of the counted transitions, one ordered bulk write of
the projection, then the batch's facts in one write per member (scoring.py); activity
likewise; a batch of attendances is one unordered insert of approved hours entries.
The handlers only adapt: the work is in the use cases (usecases/), reached through the
service's context (context.py).
"""

from __future__ import annotations

from services.engagement.context import Engagement
from services.engagement.usecases import MemberNotYetKnown
from shared.bus import TransientError
from shared.events import (
    ActivityChanged,
    ActivityPublished,
    AnswerAccepted,
    Attended,
    CommentAdded,
    HoursApproved,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    PostCreated,
    ReactionAdded,
    ReferralMade,
)
from shared.subscriptions import Batch, Subscriptions

subscriptions = Subscriptions("engagement")
members = subscriptions.consumer("engagement-members", stream="MEMBERS")
# Every effect is guarded by the fact's id (standings, first answers), so the wrapper's
# processed-ids round trips would only repeat that check.
activity = subscriptions.consumer("engagement-activity", stream="ENGAGEMENT", dedupe=False)
# Every effect is guarded already: an entry's id is derived from its member and shift, an
# activity's title by its time.
activities = subscriptions.consumer("engagement-activities", stream="ACTIVITIES", dedupe=False)


class EngagementHandlers:
    """The adapters of the three consumers: each hands its batch to one use case."""

    def __init__(self, engagement: Engagement) -> None:
        self.engagement = engagement

    # One handler for the four types on purpose: one read of the projection, one insert of the
    # counted transitions and one bulk write for a whole mixed batch.
    @members.on(MemberJoined, MemberUpdated, MemberLeft, ReferralMade)
    async def on_members(self, batch: Batch) -> None:
        """The projection (display_name, region, roles, locale, timezone, referred_by, status,
        joined_at), the community's counters, erasures, and the facts joined and referral."""
        await self.engagement.members.apply(batch)

    # One handler for the five: the facts of a whole batch in one write per member.
    @activity.on(PostCreated, CommentAdded, ReactionAdded, AnswerAccepted, HoursApproved)
    async def on_activity(self, batch: Batch) -> None:
        """The service's own activity events: first answers, then the facts into standings."""
        await self.engagement.activity.record(batch)

    # One handler for the three: titles noted, then the batch's entries in one insert.
    @activities.on(ActivityPublished, ActivityChanged, Attended)
    async def on_activities(self, batch: Batch) -> None:
        """Attendance at activities: approved hours entries, with hours-approved (scored by
        `on_activity` like hours approved by hand); the activities' titles label them."""
        try:
            await self.engagement.hours.credit_attendance(batch)
        except MemberNotYetKnown as exc:
            raise TransientError(str(exc)) from exc
