"""Notifier rules with no I/O: messages, preferences, and where and when each message goes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.notifier.timing import QuietHours, earliest_send, local_date, next_digest
from shared.events import LEVELS
from shared.limits import Request
from shared.tags import normalise_tags

PushChannel = Literal["telegram", "email", "webhook"]
PUSH_CHANNELS: tuple[str, ...] = ("telegram", "email", "webhook")

#: Every message belongs to one category. `account` and `signups` messages are transactional
#: (the member's account; a sign-up the member made: its confirmation, waitlist, reminders,
#: changes and cancellation): they cannot be switched off, ignore the daily budget and the rate
#: limit, and need no marketing consent (they still respect quiet hours).
MANDATORY_CATEGORIES = ("account", "signups")
OPTIONAL_CATEGORIES = (
    "referrals",
    "achievements",
    "community",
    "coordination",
    "campaigns",
    "activities",
)
CATEGORIES = MANDATORY_CATEGORIES + OPTIONAL_CATEGORIES
URGENT_CATEGORIES = frozenset(MANDATORY_CATEGORIES)
DIGEST_CATEGORY = "community"


def level_rank(level: str | None) -> int:
    return LEVELS.index(level) if level in LEVELS else 0


def delivery_id(cause_event_id: str, member_id: str, channel: str) -> str:
    """Deterministic: at most one delivery per cause event, member and channel."""
    digest = hashlib.sha256(f"{cause_event_id}:{member_id}:{channel}".encode()).hexdigest()
    return f"n_{digest[:32]}"


def digest_cause(member_id: str, day: date) -> str:
    """The cause id of a member's daily digest: one digest per member and local day."""
    return f"digest:{member_id}:{day.isoformat()}"


@dataclass(frozen=True)
class Audience:
    """Who a message with an audience is for: members of any of the regions, with any of the
    roles and any of the interests given (an empty list does not restrict; the dimensions
    combine with "and"), at `min_level` or above. Campaigns give regions, roles and a level,
    activities regions, roles and interests."""

    regions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    interests: tuple[str, ...] = ()
    min_level: str | None = None

    @classmethod
    def of(cls, audience: Any) -> Audience:
        """From an event's audience (campaign-started's or activity-published's)."""
        return cls(
            regions=tuple(dict.fromkeys(audience.regions)),
            roles=tuple(dict.fromkeys(audience.roles)),
            interests=tuple(normalise_tags(getattr(audience, "interests", ()))),
            min_level=getattr(audience, "min_level", None),
        )


@dataclass(frozen=True)
class Message:
    """One kind of message with its facts; the recipient's name and locale are added per member.

    `mentions` maps a template variable to the member whose name fills it (the commenter, the
    asker, the friend brought in). Deliveries store that member's id, never the name: texts are
    rendered when they are read or sent, from the projection, so a member who is erased is
    named nowhere afterwards (`texts.py`).

    `data` are ids a client acts on (an activity, a sign-up and what can be done with it),
    shown with the in-app message and in the webhook payload. `expires` is the instant after
    which the message is pointless (a shift's start): nothing is sent from then on, and a push
    that quiet hours or the rate limit would delay past it is dropped.
    """

    template: str
    category: str
    context: dict[str, Any] = field(default_factory=dict)
    marketing: bool = False  # only members who consented to marketing receive it
    mentions: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    expires: datetime | None = None

    def stored_context(self) -> dict[str, Any]:
        """The facts a delivery keeps: the context without the names of mentioned members."""
        return {k: v for k, v in self.context.items() if k not in self.mentions}

    @property
    def urgent(self) -> bool:
        return self.category in URGENT_CATEGORIES


# ---------------------------------------------------------------------------------------------
# Preferences


def _time_text(value: Any) -> Any:
    """A wall-clock time is written as text ("22:00"); a number would be read as seconds after
    midnight UTC, which is not what anyone means by it."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or len(value) > 32:
        raise ValueError("must be a local time such as 22:00")
    return value


WallTime = Annotated[time, BeforeValidator(_time_text)]
#: A category name as a client writes it (the known ones are checked below).
CategoryName = Annotated[str, StringConstraints(min_length=1, max_length=50)]
#: Integers given as JSON numbers: `true` is not 1 o'clock, "18" is not an hour.
StrictHour = Annotated[int, Field(strict=True, ge=0, le=23)]
RatePerHour = Annotated[int, Field(strict=True, ge=1, le=1000)]


class QuietHoursIn(Request):
    start: WallTime = Field(description="local time the quiet hours begin, e.g. 22:00")
    end: WallTime = Field(description="local time they end, e.g. 08:00 (may be the next day)")

    def window(self) -> QuietHours:
        return QuietHours(self.start.replace(tzinfo=None), self.end.replace(tzinfo=None))


class Preferences(Request):
    """What a member wants: push channels in order, categories, quiet hours, digest, rate.

    A request body (strict: unknown fields, coerced numbers and booleans are refused); what is
    stored is read back with `stored()`, which is lenient about the types the server returns.
    """

    channels: list[PushChannel] = Field(
        default_factory=lambda: list(PUSH_CHANNELS),
        max_length=len(PUSH_CHANNELS),
        description="push channels the member accepts, in order of preference (the first usable "
        "one is tried first, the next ones are the fallback); the in-app inbox is always on",
    )
    categories: dict[CategoryName, StrictBool] = Field(
        default_factory=dict,
        max_length=len(CATEGORIES),
        description=f"category → on/off; missing categories are on. Categories: "
        f"{', '.join(OPTIONAL_CATEGORIES)} (account and signups messages cannot be switched "
        "off)",
    )
    community: Literal["instant", "digest"] = Field(
        "instant", description="`digest`: community messages are pushed once a day, together"
    )
    digest_hour: StrictHour = Field(18, description="local hour the daily digest goes out")
    quiet_hours: QuietHoursIn | None = Field(
        None, description="nothing is pushed inside this local window; messages wait, not drop"
    )
    rate_limit_per_hour: RatePerHour | None = Field(
        10, description="at most this many pushed messages an hour (null: no limit)"
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each channel may appear once")
        return value

    @model_validator(mode="after")
    def _known_categories(self) -> Preferences:
        unknown = set(self.categories) - set(OPTIONAL_CATEGORIES)
        unknown -= {c for c in MANDATORY_CATEGORIES if self.categories.get(c) is True}
        if unknown:
            raise ValueError(
                f"unknown or mandatory categories {sorted(unknown)}; choose from "
                f"{list(OPTIONAL_CATEGORIES)} (account and signups messages cannot be "
                "switched off)"
            )
        return self

    @classmethod
    def stored(cls, value: dict[str, Any] | None) -> Preferences:
        """Preferences as stored (validated when they were put): types are read leniently,
        since the server may return a boolean as 0/1 (docs/patterns.md, 6)."""
        return cls.model_validate(value, strict=False) if value else cls()

    def wants(self, category: str) -> bool:
        return category in URGENT_CATEGORIES or self.categories.get(category, True)

    def quiet(self) -> QuietHours | None:
        return self.quiet_hours.window() if self.quiet_hours else None


# ---------------------------------------------------------------------------------------------
# Recipients and plans


@dataclass(frozen=True)
class Recipient:
    """The notifier's view of one member (from its projection)."""

    member_id: str
    display_name: str = ""
    locale: str = "ru"
    timezone: str = "Europe/Moscow"
    contacts: dict[str, str | None] = field(default_factory=dict)
    marketing: bool = False
    active: bool = True
    preferences: Preferences = field(default_factory=Preferences)
    blocked: frozenset[str] = frozenset()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Recipient:
        prefs = doc.get("preferences")
        return cls(
            member_id=doc["_id"],
            display_name=doc.get("display_name") or "",
            locale=doc.get("locale") or "ru",
            timezone=doc.get("timezone") or "Europe/Moscow",
            contacts=dict(doc.get("contacts") or {}),
            # Read as truthy: nx-27017 may hold a boolean as 0/1 (docs/patterns.md, 6).
            marketing=bool((doc.get("consent") or {}).get("marketing")),
            active=doc.get("status") == "active",
            preferences=Preferences.stored(prefs),
            blocked=frozenset(k for k, v in (doc.get("blocked") or {}).items() if v),
        )

    def contact(self, channel: str) -> str | None:
        """The address a push channel needs; the organisation's webhook needs none."""
        if channel == "webhook":
            return self.member_id
        return self.contacts.get(channel) or None


def usable_channels(member: Recipient, available: frozenset[str]) -> list[str]:
    """The member's push channels in their order: switched on by the operator (settings) and
    by the member, with a contact, and not known to fail for good (a blocked bot, a bounce)."""
    return [
        c
        for c in member.preferences.channels
        if c in available and c not in member.blocked and member.contact(c)
    ]


@dataclass(frozen=True)
class Plan:
    """Where and when one message goes for one member (the in-app inbox always receives)."""

    member_id: str
    route: tuple[str, ...]  # push channels in order: the first is tried, the rest are fallbacks
    due: datetime  # not before (quiet hours, digest time)
    deferred: str | None = None  # why it waits: quiet-hours, digest
    digest_day: date | None = None  # set when it joins the member's daily digest
    budget_day: date | None = None  # set when it spends one of the member's daily budget
    expired: str | None = None  # the push channel dropped: it could not go before `expires`

    def without_push(self) -> Plan:
        return Plan(self.member_id, (), self.due)


def plan(
    message: Message, member: Recipient, now: datetime, available: frozenset[str]
) -> Plan | None:
    """None when the member does not get this message at all (left, no consent, category off,
    expired)."""
    if not member.active:
        return None
    if message.expires is not None and now >= message.expires:
        return None
    if message.marketing and not member.marketing:
        return None
    prefs = member.preferences
    if not prefs.wants(message.category):
        return None
    route = tuple(usable_channels(member, available))
    if not route:
        return Plan(member.member_id, (), now)
    quiet = prefs.quiet()
    if message.category == DIGEST_CATEGORY and prefs.community == "digest":
        at, day = next_digest(now, member.timezone, prefs.digest_hour)
        return Plan(
            member.member_id,
            route,
            earliest_send(at, member.timezone, quiet),
            deferred="digest",
            digest_day=day,
        )
    due = earliest_send(now, member.timezone, quiet)
    if message.expires is not None and due >= message.expires:
        # Quiet hours last past the point: the inbox has it now, nothing is pushed later.
        return Plan(member.member_id, (), now, expired=route[0])
    return Plan(
        member.member_id,
        route,
        due,
        deferred="quiet-hours" if due > now else None,
        budget_day=None if message.urgent else local_date(due, member.timezone),
    )


def next_channel(
    route: list[str], tried: list[str], member: Recipient, available: frozenset[str]
) -> str | None:
    """The fallback after a channel failed for good: the next one on the route still usable."""
    usable = set(usable_channels(member, available))
    for channel in route:
        if channel not in tried and channel in usable:
            return channel
    return None
