"""The events the notifier service publishes (stream NOTIFIER)."""

from __future__ import annotations

from pydantic import Field

from shared.events.base import Channel, EventData


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
