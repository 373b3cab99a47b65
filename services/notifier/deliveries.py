"""Delivery documents and what each step of their life changes (pure: no I/O).

A delivery is one message to one member on one channel (docs/notifier.md, "Deliveries and the
log"). Fan-out creates them (`inapp`, `push`, digest items); the dispatcher moves them on after
each attempt (`sent`, `retry`, `deferred`, `cancelled`, `failed` and its `fallback`). Each
function returns the new document, or the fields an attempt changes, and the events the change
announces; the unit of work writes both together (the store says it in MongoDB's words).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from services.notifier import domain
from services.notifier.domain import Message, Plan, Recipient
from services.notifier.timing import quiet_until
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import CloudEvent, NotificationFailed, NotificationSent, new_event


class Cause(Protocol):
    """Why a message is sent: an event (a CloudEvent is one), or a key naming the occasion when
    several events may lead to the same message (`Occasion`)."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def correlationid(self) -> str: ...


@dataclass(frozen=True)
class Occasion:
    """A cause that is not one event: a planned reminder (`reminder:<id>`), or a cancellation
    that both activity-cancelled and each sign-up's sign-up-changed announce, told once
    (`activity-cancelled:<activity id>`). Delivery ids derive from `id`, so whichever event
    comes first writes the message and the others find it written."""

    id: str
    type: str
    correlationid: str


#: The fields a change sets and the events it raises.
Change = tuple[Doc, list[CloudEvent]]
#: A digest item: the member's digest delivery as it is created, the item's key, the item.
DigestEntry = tuple[Doc, str, Doc]
#: Fields of a failed delivery its fallback does not take over.
NOT_INHERITED = ("_id", "claim", "last_error", "delivered_ms")


def message_parts(message: Message) -> Doc:
    """What a delivery (or a digest item) keeps of its message to render it later: the
    template, its facts, and the ids of the members it names (texts.py) — no name."""
    parts: Doc = {
        "template": message.template,
        "context": message.stored_context(),
        "mentions": dict(message.mentions),
    }
    if message.marketing:  # an e-mail of it carries an unsubscribe link
        parts["marketing"] = True
    return parts


def is_marketing(doc: Doc) -> bool:
    """Whether a delivery holds a message sent only with marketing consent (itself or a digest
    item). One written before the flag was kept: a campaign announcement (category campaigns)."""
    parts = [doc, *(doc.get("items") or {}).values()]
    # Read as truthy: nx-27017 may hold a boolean as 0/1 (docs/patterns.md, 6).
    return any(bool(p.get("marketing")) for p in parts) or doc.get("category") == "campaigns"


def base_delivery(
    cause: Cause, message: Message, member: Recipient, channel: str, now: datetime
) -> Doc:
    extra: Doc = {"data": dict(message.data)} if message.data else {}
    if message.expires is not None:
        extra["expires_ms"] = epoch_ms(message.expires)
    return {
        "_id": domain.delivery_id(cause.id, member.member_id, channel),
        "member_id": member.member_id,
        "channel": channel,
        **message_parts(message),
        **extra,
        "category": message.category,
        "locale": member.locale,
        # Times in a text (a shift's) are shown in the member's zone as of the planning.
        "timezone": member.timezone,
        "cause_event_id": cause.id,
        "cause_type": cause.type,
        "correlation_id": cause.correlationid,
        "created_at": now,
        "created_ms": epoch_ms(now),
        "attempts": 0,
    }


def _sent_event(delivery: Doc, correlation_id: str | None) -> CloudEvent:
    return new_event(
        NotificationSent(
            notification_id=delivery["_id"],
            member_id=delivery["member_id"],
            channel=delivery["channel"],
            template=delivery["template"],
            cause_event_id=delivery["cause_event_id"],
        ),
        correlation_id=correlation_id,
    )


def inapp(cause: Cause, message: Message, member: Recipient, now: datetime) -> Change:
    """Stored is delivered: the inbox is the in-app channel. Announced by notification-sent."""
    base = base_delivery(cause, message, member, "inapp", now)
    doc = {
        **base,
        "status": "delivered",
        "delivered_ms": epoch_ms(now),
        "due_ms": epoch_ms(now),
        "read": False,
    }
    return doc, [_sent_event(doc, cause.correlationid)]


def push(cause: Cause, message: Message, member: Recipient, plan: Plan, now: datetime) -> Doc:
    """The push on the first channel of the member's route, due when the plan says."""
    return {
        **base_delivery(cause, message, member, plan.route[0], now),
        "status": "deferred" if plan.deferred else "pending",
        "deferred": plan.deferred,
        "due_ms": epoch_ms(plan.due),
        "route": list(plan.route),
        "tried": [],
    }


def digest_entry(
    cause: Cause, message: Message, member: Recipient, plan: Plan, now: datetime
) -> DigestEntry:
    """The item this message adds to the member's digest of `plan.digest_day`."""
    day = plan.digest_day
    assert day is not None
    digest = domain.digest_cause(member.member_id, day)
    doc = {
        "_id": domain.delivery_id(digest, member.member_id, plan.route[0]),
        "member_id": member.member_id,
        "channel": plan.route[0],
        "template": "digest",
        "category": message.category,
        "locale": member.locale,
        "context": {},
        "mentions": {},
        "cause_event_id": digest,
        "cause_type": "digest",
        "correlation_id": digest,
        "created_at": now,
        "created_ms": epoch_ms(now),
        "attempts": 0,
        "status": "deferred",
        "deferred": "digest",
        "due_ms": epoch_ms(plan.due),
        "route": list(plan.route),
        "tried": [],
        "digest_day": day.isoformat(),
    }
    return doc, cause.id, {**message_parts(message), "at_ms": epoch_ms(now)}


def next_day(entry: DigestEntry) -> DigestEntry:
    """The same item in the next day's digest (today's was already claimed or sent)."""
    doc, key, item = entry
    day = datetime.fromisoformat(doc["digest_day"]).date() + timedelta(days=1)
    digest = domain.digest_cause(doc["member_id"], day)
    moved = {
        **doc,
        "_id": domain.delivery_id(digest, doc["member_id"], doc["channel"]),
        "cause_event_id": digest,
        "correlation_id": digest,
        "digest_day": day.isoformat(),
        "due_ms": doc["due_ms"] + 24 * 3600 * 1000,
    }
    return moved, key, item


# -- after an attempt ---------------------------------------------------------------------------


def blocker(
    channel: str, member: Recipient | None, now: datetime, on: frozenset[str]
) -> str | None:
    """Why a delivery on `channel` cannot be sent right now, apart from the rate limit
    (`on`: the channels the operator switched on)."""
    if member is None or not member.active:
        return "member-left"
    if channel not in on or channel in member.blocked or member.contact(channel) is None:
        return "channel-unusable"
    if quiet_until(now, member.timezone, member.preferences.quiet()) is not None:
        return "quiet-hours"
    return None


def cancelled(why: str = "member left") -> Doc:
    return {"status": "cancelled", "last_error": why}


def expired(delivery: Doc, at: datetime) -> bool:
    """Whether a delivery with a deadline (a reminder: the shift's start) can no longer go at
    `at`; one without a deadline never expires."""
    deadline = delivery.get("expires_ms")
    return isinstance(deadline, int | float) and epoch_ms(at) >= deadline


def deferred(until: datetime, why: str) -> Doc:
    return {"status": "deferred", "deferred": why, "due_ms": epoch_ms(until)}


def retry(error: str, attempts: int, now: datetime, delay: float) -> Doc:
    """Due again after `delay` seconds."""
    return {
        "status": "pending",
        "due_ms": epoch_ms(now) + int(delay * 1000),
        "last_error": error,
        "attempts": attempts,
    }


def sent(delivery: Doc, attempts: int, now: datetime) -> Change:
    fields = {
        "status": "delivered",
        # No rendered text is kept: the inbox and the log render it when read, so a member
        # named in it and erased later is named nowhere.
        "delivered_ms": epoch_ms(now),
        "attempts": attempts,
        "last_error": None,
    }
    return fields, [_sent_event(delivery, delivery.get("correlation_id"))]


def failed(
    delivery: Doc, error: str, attempts: int, now: datetime, following: str | None
) -> Change:
    """Failed for good on this channel; `following` is the channel its fallback goes to."""
    event = new_event(
        NotificationFailed(
            notification_id=delivery["_id"],
            member_id=delivery["member_id"],
            channel=delivery["channel"],
            error=error[:500],
            attempts=max(attempts, 1),
        ),
        correlation_id=delivery.get("correlation_id"),
    )
    fields = {
        "status": "failed",
        "last_error": error,
        "attempts": attempts,
        "failed_ms": epoch_ms(now),
        "fallback": following,
    }
    return fields, [event]


@dataclass(frozen=True)
class Fallback:
    """Where a message goes after its channel failed for good (None: nowhere)."""

    channel: str | None
    tried: list[str]


def fallback_channel(delivery: Doc, member: Recipient | None, on: frozenset[str]) -> Fallback:
    """The next usable channel on the delivery's route (none when the member's projection
    could not be read: `member` is None)."""
    tried = [*delivery.get("tried", []), delivery["channel"]]
    if member is None:
        return Fallback(None, tried)
    return Fallback(domain.next_channel(delivery.get("route", []), tried, member, on), tried)


def fallback(delivery: Doc, member: Recipient, way: Fallback, now: datetime) -> Doc:
    """The fallback's own delivery: the same message on the next channel, due now (or when
    the member's quiet hours end). Its deterministic id keeps it single after a crash."""
    assert way.channel is not None
    due = quiet_until(now, member.timezone, member.preferences.quiet()) or now
    doc = {k: v for k, v in delivery.items() if k not in NOT_INHERITED}
    doc.update(
        {
            "_id": domain.delivery_id(delivery["cause_event_id"], member.member_id, way.channel),
            "channel": way.channel,
            "status": "pending",
            "attempts": 0,
            "tried": way.tried,
            "due_ms": epoch_ms(due),
            "deferred": None,
            "fallback_from": delivery["_id"],
            "created_at": now,
            "created_ms": epoch_ms(now),
        }
    )
    return doc
