"""Campaigns event handlers: the members projection, and scoring events into standings (from
members, engagement and attendance at activities).

Each durable consumer is declared once (`subscriptions`, which the bus, the NATS permissions
and the AsyncAPI document read) and each event type gets its handler in one line (`on`). A
consumer's types share one handler on purpose: it takes the fetched batch, cuts it into runs
(`runs`: a member change after that member's activity starts a new one) and hands each run to
its use case (`usecases.Scoring`) as one bulk write; one event on its own is a batch of one, so
the bus's fallback (one by one, when a batch fails) runs the same rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.campaigns.domain import activity_of
from services.campaigns.usecases import Scoring, UnknownMember
from shared.bus import TransientError
from shared.events import (
    AnswerAccepted,
    Attended,
    CommentAdded,
    EventData,
    HoursApproved,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    PostCreated,
    ReferralMade,
)
from shared.subscriptions import Batch, Run, Subscriptions

subscriptions = Subscriptions("campaigns")

members = subscriptions.consumer("campaigns-members", stream="MEMBERS")
engagement = subscriptions.consumer("campaigns-engagement", stream="ENGAGEMENT")
activities = subscriptions.consumer("campaigns-activities", stream="ACTIVITIES")
#: The events that change a member campaigns judge an activity by (see `runs`).
PROJECTS_MEMBER = frozenset({MemberJoined, MemberUpdated, MemberLeft})
LEVELS_MEMBER = frozenset({LevelChanged})


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
    current: Batch = []
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


def _projected_member(data: EventData) -> str | None:
    return getattr(data, "member_id", None) if type(data) in PROJECTS_MEMBER else None


def _levelled_member(data: EventData) -> str | None:
    return getattr(data, "member_id", None) if type(data) in LEVELS_MEMBER else None


async def _retried_if_unknown(work: Awaitable[None]) -> None:
    """A member not known yet may be known at the next delivery: the bus retries it (and
    dead-letters the event if the member never appears)."""
    try:
        await work
    except UnknownMember as exc:
        raise TransientError(str(exc)) from exc


class CampaignsHandlers:
    def __init__(self, scoring: Scoring) -> None:
        self.scoring = scoring

    # One handler for the four types: `runs` keeps the ordering that one bulk write needs.
    @members.on(MemberJoined, MemberUpdated, MemberLeft, ReferralMade)
    async def on_member_batch(self, batch: Batch) -> None:
        for run in runs(batch, _projected_member):
            await _retried_if_unknown(self.scoring.members_changed(run))

    @engagement.on(PostCreated, CommentAdded, AnswerAccepted, HoursApproved, LevelChanged)
    async def on_engagement_batch(self, batch: Batch) -> None:
        for run in runs(batch, _levelled_member):
            await _retried_if_unknown(self.scoring.engagement_happened(run))

    @activities.on(Attended)
    async def on_activities_batch(self, run: Run[Attended]) -> None:
        """Attendance at activities' shifts: one run (nothing here changes a member)."""
        await _retried_if_unknown(self.scoring.members_acted(run))
