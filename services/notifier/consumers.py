"""The notifier's event handlers: one per durable consumer, each a thin adapter over a use case.

Each handler takes a batch (the bus hands over a whole fetched batch, and after a failure the
same batch one event at a time), so one event and a thousand take the same path.
"""

from __future__ import annotations

from services.notifier import activity_usecases, usecases
from services.notifier.usecases import Notifier
from shared.events import (
    ActivityCancelled,
    ActivityChanged,
    ActivityPublished,
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CloudEvent,
    CommentAdded,
    LevelChanged,
    MemberDrifting,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    MilestoneReached,
    QuestionUnanswered,
    ReferralMade,
    SignedUp,
    SignUpChanged,
)
from shared.subscriptions import Batch, Subscriptions

subscriptions = Subscriptions("notifier")

ENGAGEMENT_EVENTS = (LevelChanged, CommentAdded, AnswerAccepted, MemberDrifting, QuestionUnanswered)
#: Attendance (attended, no-show) sends no message: the notifier does not read it.
ACTIVITIES_EVENTS = (ActivityPublished, ActivityChanged, ActivityCancelled, SignedUp, SignUpChanged)


class NotifierHandlers:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    @subscriptions.handler(
        "notifier-members",
        stream="MEMBERS",
        subjects=["members.>"],
        types=[MemberJoined, MemberUpdated, MemberLeft, ReferralMade],
    )
    async def on_members(self, batch: Batch) -> None:
        """Joins arriving together (an import, a busy day) are projected and welcomed in bulk;
        anything else keeps its place in the order."""
        run: list[tuple[CloudEvent, MemberJoined]] = []
        for event, data in batch:
            if isinstance(data, MemberJoined):
                run.append((event, data))
                continue
            await usecases.welcome(self.notifier, run)
            run = []
            if isinstance(data, MemberUpdated):
                await usecases.update_member(self.notifier, data)
            elif isinstance(data, MemberLeft):
                await usecases.member_left(self.notifier, data)
            else:
                await usecases.notify(self.notifier, [(event, data)])
        await usecases.welcome(self.notifier, run)

    @subscriptions.handler(
        "notifier-engagement",
        stream="ENGAGEMENT",
        subjects=[f"engagement.{t.event_type}.*" for t in ENGAGEMENT_EVENTS],
        types=ENGAGEMENT_EVENTS,
    )
    async def on_engagement(self, batch: Batch) -> None:
        await usecases.notify(self.notifier, batch)

    # A campaign's fan-out to a large audience takes seconds; the bus's in-progress acks keep
    # JetStream from redelivering it while it is still being written.
    @subscriptions.handler(
        "notifier-campaigns",
        stream="CAMPAIGNS",
        subjects=["campaigns.>"],
        types=[CampaignStarted, MilestoneReached, CampaignEnded],
    )
    async def on_campaigns(self, batch: Batch) -> None:
        await usecases.notify(self.notifier, batch)

    # An announcement to a large audience, or the re-planned reminders of a 5,000-member shift,
    # take seconds; the bus's in-progress acks keep JetStream from redelivering meanwhile.
    @subscriptions.handler(
        "notifier-activities",
        stream="ACTIVITIES",
        subjects=[f"activities.{t.event_type}.*" for t in ACTIVITIES_EVENTS],
        types=ACTIVITIES_EVENTS,
    )
    async def on_activities(self, batch: Batch) -> None:
        await activity_usecases.on_activities(self.notifier, batch)
