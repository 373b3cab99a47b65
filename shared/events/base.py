"""What every event shares: the vocabulary its fields use, the base of its data, its errors."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict

from shared.clock import utcnow  # noqa: F401  (re-exported: the events name their time with it)

Role = Literal["volunteer", "coordinator", "staff", "partner"]
Locale = Literal["ru", "en"]
PostKind = Literal["post", "question", "story", "event-report"]
Level = Literal["newcomer", "participant", "active", "loyal", "ambassador"]
#: The levels of engagement, lowest first (the order a member climbs them).
LEVELS: tuple[Level, ...] = get_args(Level)
CampaignKind = Literal["contest", "referral-drive", "challenge", "promotion"]
Channel = Literal["inapp", "email", "webhook", "telegram"]


class InvalidEvent(ValueError):
    """A message that is not a valid Sarafan CloudEvent; it goes to the dead-letter stream."""


class EventData(BaseModel):
    """Base of every event's `data`. Subclasses set the class variables below.

    Each subclass is one fact; its docstring says when it is emitted."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_type: ClassVar[str]
    service: ClassVar[str]
    aggregate_field: ClassVar[str]
    schema_version: ClassVar[int] = 1
    example: ClassVar[dict[str, Any]]

    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))
