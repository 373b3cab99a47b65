"""The events the members service publishes (stream MEMBERS)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shared.events.base import EventData, EventPart, Happened, Locale, Role


class Contacts(EventPart):
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None


class Consent(EventPart):
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
    joined_at: Happened
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
    left_at: Happened


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
    at: Happened
