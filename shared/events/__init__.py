"""The public event contract: the CloudEvents 1.0 envelope, one model per event type, subjects.

The package's parts, each one idea: `base` (the vocabulary and the base of every event's data),
one module of models per producing service (`members`, `engagement`, `campaigns`, `notifier`),
`registry` (every type, and the subject grammar), `envelope` (the CloudEvent, building and
parsing one) and `schemas` (JSON Schema export). Everything is imported from here.
"""

from shared.events.base import (
    LEVELS,
    CampaignKind,
    Channel,
    EventData,
    InvalidEvent,
    Level,
    Locale,
    PostKind,
    Role,
    utcnow,
)
from shared.events.campaigns import (
    Announcement,
    Audience,
    CampaignEnded,
    CampaignEnding,
    CampaignStarted,
    DrawOutcome,
    MilestoneReached,
    Winner,
)
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
from shared.events.envelope import (
    MAX_EVENT_BYTES,
    SPECVERSION,
    CloudEvent,
    EventTooLarge,
    new_event,
    parse_event,
)
from shared.events.members import (
    Consent,
    Contacts,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    ReferralMade,
)
from shared.events.notifier import NotificationFailed, NotificationSent
from shared.events.registry import EVENT_MODELS, REGISTRY, parse_subject, subject_for
from shared.events.schemas import event_schema, example_event, export_schemas

__all__ = [
    "EVENT_MODELS",
    "LEVELS",
    "MAX_EVENT_BYTES",
    "REGISTRY",
    "SPECVERSION",
    "Announcement",
    "AnswerAccepted",
    "Audience",
    "CampaignEnded",
    "CampaignEnding",
    "CampaignKind",
    "CampaignStarted",
    "Channel",
    "CloudEvent",
    "CommentAdded",
    "Consent",
    "Contacts",
    "DrawOutcome",
    "EventData",
    "EventTooLarge",
    "HoursApproved",
    "InvalidEvent",
    "Level",
    "LevelChanged",
    "Locale",
    "MemberDrifting",
    "MemberJoined",
    "MemberLeft",
    "MemberUpdated",
    "MilestoneReached",
    "NotificationFailed",
    "NotificationSent",
    "PostCreated",
    "PostKind",
    "QuestionUnanswered",
    "ReactionAdded",
    "ReferralMade",
    "Role",
    "Winner",
    "event_schema",
    "example_event",
    "export_schemas",
    "new_event",
    "parse_event",
    "parse_subject",
    "subject_for",
    "utcnow",
]
