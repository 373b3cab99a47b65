"""The events the engagement service publishes (stream ENGAGEMENT)."""

from __future__ import annotations

from pydantic import Field

from shared.events.base import EventData, Happened, HappenedOn, Level, PostKind


class PostCreated(EventData):
    """A member published a post, question, story or event report."""

    event_type = "post-created"
    service = "engagement"
    aggregate_field = "post_id"
    example = {
        "post_id": "p_01",
        "author_id": "m_01",
        "kind": "question",
        "title": "Where do we meet on Saturday?",
        "tags": ["cleanup"],
        "created_at": "2026-11-27T10:00:00Z",
    }

    post_id: str
    author_id: str
    kind: PostKind
    title: str
    tags: list[str] = Field(default_factory=list)
    created_at: Happened


class CommentAdded(EventData):
    """A member commented on a post (for a question: an answer candidate)."""

    event_type = "comment-added"
    service = "engagement"
    aggregate_field = "post_id"
    example = {
        "comment_id": "c_01",
        "post_id": "p_01",
        "author_id": "m_02",
        "post_author_id": "m_01",
        "created_at": "2026-11-27T10:05:00Z",
    }

    comment_id: str
    post_id: str
    author_id: str
    post_author_id: str
    created_at: Happened


class ReactionAdded(EventData):
    """A member reacted to a post with one of the community's reactions (once per member and
    post)."""

    event_type = "reaction-added"
    service = "engagement"
    aggregate_field = "post_id"
    example = {
        "post_id": "p_01",
        "member_id": "m_02",
        "post_author_id": "m_01",
        "reaction": "thanks",
        "created_at": "2026-11-27T10:06:00Z",
    }

    post_id: str
    member_id: str
    post_author_id: str
    reaction: str
    created_at: Happened


class AnswerAccepted(EventData):
    """The asker of a question accepted a comment as the answer (once per question)."""

    event_type = "answer-accepted"
    service = "engagement"
    aggregate_field = "post_id"
    example = {
        "post_id": "p_01",
        "comment_id": "c_01",
        "asker_id": "m_01",
        "answerer_id": "m_02",
        "seconds_to_answer": 300,
    }

    post_id: str
    comment_id: str
    asker_id: str
    answerer_id: str
    seconds_to_answer: int = Field(ge=0)


class LevelChanged(EventData):
    """A member's engagement level went up or down."""

    event_type = "level-changed"
    service = "engagement"
    aggregate_field = "member_id"
    example = {"member_id": "m_01", "old_level": "active", "new_level": "loyal", "score": 61.5}

    member_id: str
    old_level: Level
    new_level: Level
    score: float = Field(ge=0)


class HoursApproved(EventData):
    """A member's volunteer hours were approved: by a coordinator or staff member, or at once
    from their attendance at an activity's shift (then `approved_by` recorded the attendance)."""

    event_type = "hours-approved"
    service = "engagement"
    aggregate_field = "member_id"
    example = {
        "entry_id": "h_01",
        "member_id": "m_01",
        "hours": 3.5,
        "activity": "food bank",
        "date": "2026-11-26",
        "approved_by": "m_09",
    }

    entry_id: str
    member_id: str
    hours: float = Field(gt=0)
    activity: str
    date: HappenedOn
    approved_by: str


class MemberDrifting(EventData):
    """An active-or-above member has been inactive long enough to drift (once per episode)."""

    event_type = "member-drifting"
    service = "engagement"
    aggregate_field = "member_id"
    example = {
        "member_id": "m_01",
        "level": "active",
        "last_active_at": "2026-11-10T10:00:00Z",
        "days_inactive": 17,
    }

    member_id: str
    level: Level
    last_active_at: Happened
    days_inactive: int = Field(ge=0)


class QuestionUnanswered(EventData):
    """A question had no comment from another member for the configured hours (once)."""

    event_type = "question-unanswered"
    service = "engagement"
    aggregate_field = "post_id"
    example = {"post_id": "p_01", "asker_id": "m_01", "region": "moscow", "hours_open": 24}

    post_id: str
    asker_id: str
    region: str
    hours_open: int = Field(ge=0)
