"""Which event becomes which message for whom (pure: names and campaigns are looked up first).

One rule per event type, found through `RULES` (docs/notifier.md, "What is sent, to whom"): an
event type without a rule sends nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.notifier.domain import Audience, Message, level_rank
from shared.events import (
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CommentAdded,
    EventData,
    LevelChanged,
    MemberDrifting,
    MemberJoined,
    MilestoneReached,
    QuestionUnanswered,
    ReferralMade,
)


@dataclass(frozen=True)
class Notice:
    """A message and who receives it: listed members, an audience (a campaign's, an activity's)
    or coordinators."""

    message: Message
    member_ids: tuple[str, ...] = ()
    audience: Audience | None = None
    coordinators_of: str | None = None  # a region
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lookups:
    """What the rules need to know besides the event: campaign names (and display names).

    A message that names another member says so in `Message.mentions`; deliveries keep that
    member's id and the name is filled in whenever the text is rendered (`texts.py`). So the
    consumers look up no names: `names` only fills the context for a rendering outside a
    delivery (a preview, a test).
    """

    names: dict[str, str] = field(default_factory=dict)
    campaigns: dict[str, str] = field(default_factory=dict)

    def name(self, member_id: str, fallback: str = "") -> str:
        return self.names.get(member_id) or fallback

    def campaign(self, campaign_id: str) -> str:
        return self.campaigns.get(campaign_id) or campaign_id


def campaign_needed(data: EventData) -> str | None:
    if isinstance(data, MilestoneReached | CampaignEnded):
        return data.campaign_id
    return None


def _to(member_id: str, message: Message) -> list[Notice]:
    return [Notice(message, (member_id,))]


def _welcome(data: MemberJoined, _: Lookups) -> list[Notice]:
    if not data.welcome:
        return []  # an imported member is welcomed only if the import asked for it
    return _to(data.member_id, Message("welcome", "account"))


def _referral_thanks(data: ReferralMade, lookups: Lookups) -> list[Notice]:
    friend = lookups.name(data.referred_id) or None
    message = Message(
        "referral_thanks", "referrals", {"friend": friend}, mentions={"friend": data.referred_id}
    )
    return _to(data.referrer_id, message)


def _level_up(data: LevelChanged, _: Lookups) -> list[Notice]:
    if level_rank(data.new_level) <= level_rank(data.old_level):
        return []  # only a step up is congratulated
    context = {"level": data.new_level, "score": data.score}
    return _to(data.member_id, Message("level_up", "achievements", context))


def _comment_added(data: CommentAdded, lookups: Lookups) -> list[Notice]:
    if data.author_id == data.post_author_id:
        return []  # nobody is told about their own comment
    context = {"commenter": lookups.name(data.author_id, "—")}
    message = Message("comment_added", "community", context, mentions={"commenter": data.author_id})
    return _to(data.post_author_id, message)


def _answer_accepted(data: AnswerAccepted, lookups: Lookups) -> list[Notice]:
    minutes = max(1, math.ceil(data.seconds_to_answer / 60))
    context = {"answerer": lookups.name(data.answerer_id, "—"), "minutes": minutes}
    told = _to(
        data.asker_id,
        Message("answer_accepted", "community", context, mentions={"answerer": data.answerer_id}),
    )
    if data.answerer_id != data.asker_id:
        thanks = Message(
            "answer_thanks",
            "achievements",
            {"asker": lookups.name(data.asker_id, "—")},
            mentions={"asker": data.asker_id},
        )
        told += _to(data.answerer_id, thanks)
    return told


def _drifting_invite(data: MemberDrifting, _: Lookups) -> list[Notice]:
    context = {"days": data.days_inactive}
    return _to(data.member_id, Message("drifting_invite", "community", context))


def _question_unanswered(data: QuestionUnanswered, lookups: Lookups) -> list[Notice]:
    context = {
        "asker": lookups.name(data.asker_id, "—"),
        "region": data.region,
        "hours": data.hours_open,
    }
    message = Message(
        "question_unanswered", "coordination", context, mentions={"asker": data.asker_id}
    )
    return [Notice(message, coordinators_of=data.region, exclude=(data.asker_id,))]


def _campaign_announcement(data: CampaignStarted, _: Lookups) -> list[Notice]:
    context = {
        "campaign": data.name,
        "announcement": data.announcement.model_dump(),
        "ends_at": data.ends_at.date().isoformat(),
    }
    message = Message("campaign_announcement", "campaigns", context, marketing=True)
    return [Notice(message, audience=Audience.of(data.audience))]


def _milestone_reached(data: MilestoneReached, lookups: Lookups) -> list[Notice]:
    context = {
        "campaign": lookups.campaign(data.campaign_id),
        "milestone": data.milestone,
        "points": data.points,
    }
    return _to(data.member_id, Message("milestone_reached", "achievements", context))


def _campaign_winners(data: CampaignEnded, lookups: Lookups) -> list[Notice]:
    name = lookups.campaign(data.campaign_id)
    return [
        Notice(
            Message(
                "campaign_winner",
                "achievements",
                {"campaign": name, "rank": w.rank, "points": w.points},
            ),
            (w.member_id,),
        )
        for w in data.winners
    ]


Rule = Callable[[Any, Lookups], list[Notice]]

#: The list of docs/notifier.md: the rule of each event type the notifier sends messages for.
RULES: dict[type[EventData], Rule] = {
    MemberJoined: _welcome,
    ReferralMade: _referral_thanks,
    LevelChanged: _level_up,
    CommentAdded: _comment_added,
    AnswerAccepted: _answer_accepted,
    MemberDrifting: _drifting_invite,
    QuestionUnanswered: _question_unanswered,
    CampaignStarted: _campaign_announcement,
    MilestoneReached: _milestone_reached,
    CampaignEnded: _campaign_winners,
}


def notices(data: EventData, lookups: Lookups) -> list[Notice]:
    """What is sent, to whom, for one event (nothing for an event type without a rule)."""
    rule = RULES.get(type(data))
    return rule(data, lookups) if rule is not None else []
