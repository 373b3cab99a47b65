"""The notifier's event handlers: each event type it reads, and the use case that handles it
(a method of `usecases.NotifierUseCases`, given to `NotifierHandlers` by `app.compose`).

One line per subscription: a consumer is declared once by its stream, and each event type gets
its handler with `@<consumer>.on(Type)`. The bus hands a consumer a whole fetched batch (after
a failure, the same events one at a time); the kernel cuts it, in stream order, into runs of
consecutive events of one handler (shared/subscriptions.py), so joins arriving together (an
import, a busy day) are projected and welcomed in bulk, and anything else keeps its place.
"""

from __future__ import annotations

from services.notifier.usecases import NotifierUseCases
from shared.events import (
    ActivityCancelled,
    ActivityChanged,
    ActivityPublished,
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CommentAdded,
    EventData,
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
from shared.subscriptions import Run, Subscriptions

subscriptions = Subscriptions("notifier")
# The whole MEMBERS and CAMPAIGNS streams: any type published there that is not handled here
# is dead-lettered rather than skipped (the declaration check keeps the lists complete).
members = subscriptions.consumer("notifier-members", stream="MEMBERS", subjects=["members.>"])
engagement = subscriptions.consumer("notifier-engagement", stream="ENGAGEMENT")
# A campaign's fan-out to a large audience takes seconds; the bus's in-progress acks keep
# JetStream from redelivering it while it is still being written.
campaigns = subscriptions.consumer(
    "notifier-campaigns", stream="CAMPAIGNS", subjects=["campaigns.>"]
)
# An announcement to a large audience, or the re-planned reminders of a 5,000-member shift,
# take seconds; the bus's in-progress acks keep JetStream from redelivering meanwhile.
# Attendance (attended, no-show) sends no message: the notifier does not read it.
activities = subscriptions.consumer("notifier-activities", stream="ACTIVITIES")


class NotifierHandlers:
    def __init__(self, use_cases: NotifierUseCases) -> None:
        self.use_cases = use_cases

    @members.on(MemberJoined)
    async def welcome(self, run: Run[MemberJoined]) -> None:
        await self.use_cases.welcome(run)

    @members.on(MemberUpdated)
    async def update_member(self, run: Run[MemberUpdated]) -> None:
        for _, data in run:
            await self.use_cases.update_member(data)

    @members.on(MemberLeft)
    async def member_left(self, run: Run[MemberLeft]) -> None:
        for _, data in run:
            await self.use_cases.member_left(data)

    @members.on(ReferralMade)
    @engagement.on(LevelChanged, CommentAdded, AnswerAccepted, MemberDrifting, QuestionUnanswered)
    @campaigns.on(CampaignStarted, MilestoneReached, CampaignEnded)
    async def notify(self, run: Run[EventData]) -> None:
        await self.use_cases.notify(run)

    @activities.on(SignedUp, SignUpChanged)
    async def signups_changed(self, run: Run[SignedUp | SignUpChanged]) -> None:
        await self.use_cases.signups_changed(run)

    @activities.on(ActivityPublished)
    async def activity_published(self, run: Run[ActivityPublished]) -> None:
        for event, data in run:
            await self.use_cases.activity_published(event, data)

    @activities.on(ActivityChanged)
    async def activity_changed(self, run: Run[ActivityChanged]) -> None:
        for event, data in run:
            await self.use_cases.activity_changed(event, data)

    @activities.on(ActivityCancelled)
    async def activity_cancelled(self, run: Run[ActivityCancelled]) -> None:
        for event, data in run:
            await self.use_cases.activity_cancelled(event, data)
