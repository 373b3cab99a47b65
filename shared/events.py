"""The public event contract: the CloudEvents 1.0 envelope, one model per event type, subjects."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.logs import correlation_id_var, key_id_var

SPECVERSION = "1.0"
Role = Literal["volunteer", "coordinator", "staff", "partner"]
Locale = Literal["ru", "en"]
PostKind = Literal["post", "question", "story", "event-report"]
Level = Literal["newcomer", "participant", "active", "loyal", "ambassador"]
#: The levels of engagement, lowest first (the order a member climbs them).
LEVELS: tuple[Level, ...] = get_args(Level)
CampaignKind = Literal["contest", "referral-drive", "challenge", "promotion"]
Channel = Literal["inapp", "email", "webhook", "telegram"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class InvalidEvent(ValueError):
    """A message that is not a valid Sarafan CloudEvent; it goes to the dead-letter stream."""


#: The largest event a service creates: NATS refuses messages over its max_payload (1 MiB by
#: default) and an event that cannot be published would sit in its outbox for ever. Half of
#: that leaves room for headers and for a server configured lower.
MAX_EVENT_BYTES = 512 * 1024


class EventTooLarge(ValueError):
    """An event whose JSON is over MAX_EVENT_BYTES: refused before anything is stored (HTTP 422)."""


# ---------------------------------------------------------------------------------------------
# Event data models. Each class is one fact; its docstring says when it is emitted.


class EventData(BaseModel):
    """Base of every event's `data`. Subclasses set the class variables below."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_type: ClassVar[str]
    service: ClassVar[str]
    aggregate_field: ClassVar[str]
    schema_version: ClassVar[int] = 1
    example: ClassVar[dict[str, Any]]

    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))


class Contacts(BaseModel):
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None


class Consent(BaseModel):
    terms: bool
    marketing: bool = False


class MemberJoined(EventData):
    """A person joined the community (with explicit consent to the terms)."""

    event_type = "member-joined"
    service = "members"
    aggregate_field = "member_id"
    example = {
        "member_id": "m_01",
        "display_name": "Anna",
        "region": "moscow",
        "roles": ["volunteer"],
        "interests": ["ecology"],
        "skills": ["driving"],
        "locale": "ru",
        "timezone": "Europe/Moscow",
        "contacts": {"email": "anna@example.org"},
        "consent": {"terms": True, "marketing": True},
        "referred_by": None,
        "joined_at": "2026-11-27T10:00:00Z",
    }

    member_id: str
    display_name: str
    region: str
    roles: list[Role] = Field(default_factory=list)
    interests: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    locale: Locale = "ru"
    timezone: str = "Europe/Moscow"
    contacts: Contacts
    consent: Consent
    referred_by: str | None = None
    joined_at: datetime
    #: Brought in by an import of an existing volunteer base (`joined_at` is the original
    #: date), not by a join today. Optional: absent means false (dataschemaversion stays 1).
    imported: bool = False
    #: Whether the member is to be welcomed: false for imports unless the import asked for it.
    welcome: bool = True


class MemberUpdated(EventData):
    """A member changed their profile, contacts or consent; `changes` holds new values only."""

    event_type = "member-updated"
    service = "members"
    aggregate_field = "member_id"
    example = {"member_id": "m_01", "changes": {"region": "kazan", "locale": "en"}}

    member_id: str
    changes: dict[str, Any]


class MemberLeft(EventData):
    """A member left the community; with `erase` every service forgets their personal data."""

    event_type = "member-left"
    service = "members"
    aggregate_field = "member_id"
    example = {"member_id": "m_01", "erase": True, "left_at": "2026-11-27T10:00:00Z"}

    member_id: str
    erase: bool = False
    left_at: datetime


class ReferralMade(EventData):
    """A new member joined with an existing member's referral code (word of mouth)."""

    event_type = "referral-made"
    service = "members"
    aggregate_field = "referrer_id"
    example = {
        "referral_id": "r_01",
        "referrer_id": "m_01",
        "referred_id": "m_02",
        "code": "K7QX9M",
        "at": "2026-11-27T10:00:00Z",
    }

    referral_id: str
    referrer_id: str
    referred_id: str
    code: str
    at: datetime


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
    created_at: datetime


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
    created_at: datetime


class ReactionAdded(EventData):
    """A member reacted to a post (once per member, post and reaction)."""

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
    created_at: datetime


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
    """A coordinator or staff member approved a member's volunteer hours."""

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
    date: date
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
    last_active_at: datetime
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


class Audience(BaseModel):
    regions: list[str] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    min_level: Level | None = None


class Announcement(BaseModel):
    ru: str
    en: str


class CampaignStarted(EventData):
    """A campaign became active (at its start time or by hand)."""

    event_type = "campaign-started"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "name": "Bring a friend",
        "kind": "referral-drive",
        "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
        "starts_at": "2026-12-01T00:00:00Z",
        "ends_at": "2026-12-31T00:00:00Z",
        "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
    }

    campaign_id: str
    name: str
    kind: CampaignKind
    audience: Audience
    starts_at: datetime
    ends_at: datetime
    announcement: Announcement


class MilestoneReached(EventData):
    """A member reached a campaign milestone (once per member and milestone)."""

    event_type = "milestone-reached"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {"campaign_id": "c_01", "member_id": "m_01", "milestone": 50, "points": 52}

    campaign_id: str
    member_id: str
    milestone: int
    points: float


class Winner(BaseModel):
    member_id: str
    rank: int = Field(ge=1)
    points: float


class CampaignEnded(EventData):
    """A campaign ended; winners by its winner rule (a draw publishes its seed)."""

    event_type = "campaign-ended"
    service = "campaigns"
    aggregate_field = "campaign_id"
    example = {
        "campaign_id": "c_01",
        "participants": 42,
        "winners": [{"member_id": "m_01", "rank": 1, "points": 120}],
    }

    campaign_id: str
    participants: int = Field(ge=0)
    winners: list[Winner] = Field(default_factory=list)


class NotificationSent(EventData):
    """A message was delivered to a member on one channel."""

    event_type = "notification-sent"
    service = "notifier"
    aggregate_field = "member_id"
    example = {
        "notification_id": "n_01",
        "member_id": "m_01",
        "channel": "inapp",
        "template": "welcome",
        "cause_event_id": "6f1c9d1e-0000-4000-8000-000000000000",
    }

    notification_id: str
    member_id: str
    channel: Channel
    template: str
    cause_event_id: str


class NotificationFailed(EventData):
    """A delivery failed on its channel after its last attempt."""

    event_type = "notification-failed"
    service = "notifier"
    aggregate_field = "member_id"
    example = {
        "notification_id": "n_01",
        "member_id": "m_01",
        "channel": "telegram",
        "error": "403 Forbidden: bot was blocked by the user",
        "attempts": 5,
    }

    notification_id: str
    member_id: str
    channel: Channel
    error: str
    attempts: int = Field(ge=1)


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
)
REGISTRY: dict[str, type[EventData]] = {m.event_type: m for m in EVENT_MODELS}
SERVICES = ("members", "engagement", "campaigns", "notifier")


# ---------------------------------------------------------------------------------------------
# Subjects: <service>.<type>.<aggregate id>


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


# ---------------------------------------------------------------------------------------------
# The CloudEvents 1.0 envelope (structured mode)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode message carrying one Sarafan event."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]  # required, like id, source and type
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str
    time: datetime
    subject: str = Field(min_length=1)
    datacontenttype: Literal["application/json"] = "application/json"
    #: Extension attributes (optional in CloudEvents 1.0): a reader is liberal about them. A
    #: missing correlationid is the event's own id; a missing dataschemaversion is 1.
    dataschemaversion: int = 1
    correlationid: str = Field("", description="the request or first event it follows from")
    data: dict[str, Any]

    @model_validator(mode="after")
    def _own_correlation(self) -> CloudEvent:
        if not self.correlationid:
            self.correlationid = self.id
        return self

    @property
    def nats_subject(self) -> str:
        return subject_for(REGISTRY[self.type].service, self.type, self.subject)

    def payload(self) -> EventData:
        """The typed `data`; raises InvalidEvent when it does not match its model."""
        model = REGISTRY.get(self.type)
        if model is None:
            raise InvalidEvent(f"unknown event type {self.type!r}")
        if self.dataschemaversion > model.schema_version:
            raise InvalidEvent(
                f"{self.type} dataschemaversion {self.dataschemaversion} is newer than "
                f"{model.schema_version}, the newest this service understands"
            )
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.type} data invalid: {_errors(exc)}") from exc

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def new_event(
    data: EventData,
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Wrap event data in its envelope.

    The correlation id defaults to the one in context (the HTTP request's, or the cause
    event's inside a handler: see shared.logs.event_context), else the event's own id, so
    every event a request or an event leads to carries the same id without each call site
    passing it.
    """
    eid = event_id or str(uuid.uuid4())
    correlation_id = correlation_id or correlation_id_var.get()
    # Which API key's request made it, for the audit (a CloudEvents extension attribute).
    audit = {"keyid": key} if (key := key_id_var.get()) else {}
    event = CloudEvent(
        **audit,
        specversion=SPECVERSION,
        id=eid,
        source=f"/services/{data.service}",
        type=data.event_type,
        time=time or utcnow(),
        subject=data.aggregate_id(),
        dataschemaversion=data.schema_version,
        correlationid=correlation_id or eid,
        data=data.model_dump(mode="json"),
    )
    size = len(event.to_json())
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"{data.event_type} would be {size} bytes, over the {MAX_EVENT_BYTES} an event may be"
        )
    return event


def parse_event(raw: bytes | str) -> tuple[CloudEvent, EventData]:
    """Decode and validate a message body; raises InvalidEvent with a readable reason."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidEvent("body is not a JSON object")
    try:
        envelope = CloudEvent.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudEvent: {_errors(exc)}") from exc
    return envelope, envelope.payload()


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
    )


# ---------------------------------------------------------------------------------------------
# JSON Schema export (for consumers in other languages)


def event_schema(model: type[EventData]) -> dict[str, Any]:
    """JSON Schema of a whole CloudEvent whose `data` is this model."""
    data_schema = model.model_json_schema(mode="validation")
    defs = data_schema.pop("$defs", {})
    envelope = CloudEvent.model_json_schema()
    envelope.pop("$defs", None)
    envelope["properties"]["type"] = {"const": model.event_type}
    envelope["properties"]["data"] = data_schema
    envelope["properties"]["dataschemaversion"] = {
        "type": "integer",
        "maximum": model.schema_version,
    }
    envelope["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    envelope["$id"] = f"https://sarafan.community/schemas/{model.event_type}.json"
    envelope["title"] = model.__name__
    envelope["description"] = (model.__doc__ or "").strip()
    if defs:
        envelope["$defs"] = defs
    return envelope


def example_event(model: type[EventData]) -> CloudEvent:
    return new_event(
        model.model_validate(model.example),
        event_id="00000000-0000-4000-8000-000000000001",
        time=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )


def export_schemas(directory: Path) -> list[Path]:
    """Write `<type>.json` (schema) and `<type>.example.json` for every event type."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EVENT_MODELS:
        path = directory / f"{model.event_type}.json"
        path.write_text(json.dumps(event_schema(model), indent=2, ensure_ascii=False) + "\n")
        example = directory / f"{model.event_type}.example.json"
        example.write_text(example_event(model).model_dump_json(indent=2) + "\n")
        written += [path, example]
    return written
