"""Every event type, and the grammar of the subjects they travel on:
`<service>.<type>.<aggregate id>`."""

from __future__ import annotations

from collections.abc import Iterable

from shared.events.activities import (
    ActivityCancelled,
    ActivityChanged,
    ActivityPublished,
    Attended,
    NoShow,
    SignedUp,
    SignUpChanged,
)
from shared.events.base import EventData
from shared.events.campaigns import CampaignEnded, CampaignStarted, MilestoneReached
from shared.events.engagement import (
    AnswerAccepted,
    CommentAdded,
    HoursApproved,
    LevelChanged,
    MemberDrifting,
    PostCreated,
    QuestionUnanswered,
    ReactionAdded,
)
from shared.events.members import MemberJoined, MemberLeft, MemberUpdated, ReferralMade
from shared.events.notifier import NotificationFailed, NotificationSent
from shared.topology import SERVICES, STREAMS

EVENT_MODELS: tuple[type[EventData], ...] = (
    MemberJoined,
    MemberUpdated,
    MemberLeft,
    ReferralMade,
    PostCreated,
    CommentAdded,
    ReactionAdded,
    AnswerAccepted,
    LevelChanged,
    HoursApproved,
    MemberDrifting,
    QuestionUnanswered,
    CampaignStarted,
    MilestoneReached,
    CampaignEnded,
    NotificationSent,
    NotificationFailed,
    ActivityPublished,
    ActivityChanged,
    ActivityCancelled,
    SignedUp,
    SignUpChanged,
    Attended,
    NoShow,
)
REGISTRY: dict[str, type[EventData]] = {m.event_type: m for m in EVENT_MODELS}


def subject_for(service: str, event_type: str, aggregate_id: str) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    if event_type not in REGISTRY:
        raise ValueError(f"unknown event type {event_type!r}")
    if not aggregate_id or any(c in aggregate_id for c in ".*> \t\r\n"):
        raise ValueError(f"aggregate id {aggregate_id!r} cannot be a NATS subject token")
    return f"{service}.{event_type}.{aggregate_id}"


def parse_subject(subject: str) -> tuple[str, str, str]:
    """Split `<service>.<type>.<aggregate id>`; raises ValueError for anything else."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] not in SERVICES or parts[1] not in REGISTRY:
        raise ValueError(f"not a Sarafan event subject: {subject!r}")
    return parts[0], parts[1], parts[2]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


def carried_by(patterns: Iterable[str]) -> list[type[EventData]]:
    """The event types whose subjects match one of `patterns` (a consumer's filter subjects)."""
    patterns = list(patterns)
    return [
        m
        for m in EVENT_MODELS
        if any(subject_matches(p, f"{m.service}.{m.event_type}.id") for p in patterns)
    ]


def stream_owner(stream: str) -> str | None:
    """The service whose events `stream` holds (`<service>.>`), or None for another stream."""
    return next((service for service, name in STREAMS.items() if name == stream), None)
