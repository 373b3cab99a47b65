"""Which event becomes which message for whom (pure: names and campaigns are looked up first)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.notifier.domain import Message, level_rank
from shared.events import (
    AnswerAccepted,
    Audience,
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
    """A message and who receives it: listed members, a campaign audience or coordinators."""

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


def notices(data: EventData, lookups: Lookups) -> list[Notice]:
    """The list of docs/notifier.md: what is sent, to whom, for each event the notifier consumes."""
    if isinstance(data, MemberJoined):
        if not data.welcome:
            return []  # an imported member is welcomed only if the import asked for it
        return [Notice(Message("welcome", "account"), (data.member_id,))]
    if isinstance(data, ReferralMade):
        friend = lookups.name(data.referred_id) or None
        return [
            Notice(
                Message(
                    "referral_thanks",
                    "referrals",
                    {"friend": friend},
                    mentions={"friend": data.referred_id},
                ),
                (data.referrer_id,),
            )
        ]
    if isinstance(data, LevelChanged):
        if level_rank(data.new_level) <= level_rank(data.old_level):
            return []  # only a step up is congratulated
        return [
            Notice(
                Message("level_up", "achievements", {"level": data.new_level, "score": data.score}),
                (data.member_id,),
            )
        ]
    if isinstance(data, CommentAdded):
        if data.author_id == data.post_author_id:
            return []  # nobody is told about their own comment
        return [
            Notice(
                Message(
                    "comment_added",
                    "community",
                    {"commenter": lookups.name(data.author_id, "—")},
                    mentions={"commenter": data.author_id},
                ),
                (data.post_author_id,),
            )
        ]
    if isinstance(data, AnswerAccepted):
        minutes = max(1, math.ceil(data.seconds_to_answer / 60))
        told = [
            Notice(
                Message(
                    "answer_accepted",
                    "community",
                    {"answerer": lookups.name(data.answerer_id, "—"), "minutes": minutes},
                    mentions={"answerer": data.answerer_id},
                ),
                (data.asker_id,),
            )
        ]
        if data.answerer_id != data.asker_id:
            told.append(
                Notice(
                    Message(
                        "answer_thanks",
                        "achievements",
                        {"asker": lookups.name(data.asker_id, "—")},
                        mentions={"asker": data.asker_id},
                    ),
                    (data.answerer_id,),
                )
            )
        return told
    if isinstance(data, MemberDrifting):
        return [
            Notice(
                Message("drifting_invite", "community", {"days": data.days_inactive}),
                (data.member_id,),
            )
        ]
    if isinstance(data, QuestionUnanswered):
        return [
            Notice(
                Message(
                    "question_unanswered",
                    "coordination",
                    {
                        "asker": lookups.name(data.asker_id, "—"),
                        "region": data.region,
                        "hours": data.hours_open,
                    },
                    mentions={"asker": data.asker_id},
                ),
                coordinators_of=data.region,
                exclude=(data.asker_id,),
            )
        ]
    if isinstance(data, CampaignStarted):
        return [
            Notice(
                Message(
                    "campaign_announcement",
                    "campaigns",
                    {
                        "campaign": data.name,
                        "announcement": data.announcement.model_dump(),
                        "ends_at": data.ends_at.date().isoformat(),
                    },
                    marketing=True,
                ),
                audience=data.audience,
            )
        ]
    if isinstance(data, MilestoneReached):
        return [
            Notice(
                Message(
                    "milestone_reached",
                    "achievements",
                    {
                        "campaign": lookups.campaign(data.campaign_id),
                        "milestone": data.milestone,
                        "points": data.points,
                    },
                ),
                (data.member_id,),
            )
        ]
    if isinstance(data, CampaignEnded):
        return [
            Notice(
                Message(
                    "campaign_winner",
                    "achievements",
                    {
                        "campaign": lookups.campaign(data.campaign_id),
                        "rank": w.rank,
                        "points": w.points,
                    },
                ),
                (w.member_id,),
            )
            for w in data.winners
        ]
    return []
