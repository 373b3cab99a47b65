"""Members' rules with no I/O: contacts, referral codes, who may refer whom, profile changes."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from shared import query
from shared.events import MemberJoined, Role

#: Referral-code alphabet without look-alikes (no 0/O, 1/I/L, 5/S, 8/B, 2/Z, U/V).
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
CODE_LENGTH = 7
CONTACT_KINDS = ("email", "phone", "telegram")
#: Profile fields a member may change with PATCH (besides contacts and consent).
PROFILE_FIELDS = ("display_name", "region", "roles", "interests", "skills", "locale", "timezone")
# Telegram usernames: 5-32 of a-z, 0-9 and _, starting with a letter, not ending with _,
# no double underscore (https://core.telegram.org/method/account.checkUsername).
TELEGRAM_RE = re.compile(r"^[a-z](?!.*__)[a-z0-9_]{3,30}[a-z0-9]$")
TELEGRAM_LINK_RE = re.compile(r"^(?:https?://)?(?:www\.)?(?:t|telegram)\.me/", re.IGNORECASE)


class RuleViolation(ValueError):
    """A join or change that the community's rules refuse (HTTP 422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- contacts -------------------------------------------------------------------------------


def normalise_email(raw: str) -> str:
    """Case- and space-insensitive email; raises RuleViolation when it is not an address."""
    candidate = "".join(raw.split()).lower()
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise RuleViolation("invalid_email", f"email {raw!r} is not valid: {exc}") from exc
    return checked.normalized.lower()


def normalise_phone(raw: str, default_region: str | None = "RU") -> str:
    """E.164 (`+79161234567`) by libphonenumber; national formats read in `default_region`."""
    text = raw.strip()
    if text.startswith("00"):  # the common international prefix, whatever the region's IDD
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region or None)
    except phonenumbers.NumberParseException as exc:
        raise RuleViolation("invalid_phone", f"phone {raw!r} is not a phone number: {exc}") from exc
    if number.extension:
        raise RuleViolation("invalid_phone", f"phone {raw!r}: extensions are not supported")
    if not phonenumbers.is_valid_number(number):
        raise RuleViolation(
            "invalid_phone",
            f"phone {raw!r} is not a valid number (use the international format, +<country>...)",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_telegram(raw: str) -> str:
    """A Telegram username without `@` or t.me link, lower case (Telegram ignores case)."""
    handle = TELEGRAM_LINK_RE.sub("", raw.strip()).removeprefix("@").rstrip("/").lower()
    if not TELEGRAM_RE.fullmatch(handle):
        raise RuleViolation(
            "invalid_telegram",
            f"telegram handle {raw!r} must be 5-32 letters, digits or single underscores, "
            "starting with a letter",
        )
    return handle


@dataclass(frozen=True)
class Contacts:
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Contacts:
        """The contacts of a stored member (kept as top-level fields)."""
        return cls(doc.get("email"), doc.get("phone"), doc.get("telegram"))

    def as_dict(self) -> dict[str, str | None]:
        return {kind: getattr(self, kind) for kind in CONTACT_KINDS}

    def any(self) -> bool:
        return any(self.as_dict().values())

    def shared_with(self, other: Contacts) -> list[str]:
        """Which contact kinds two people have in common (a self-referral sign)."""
        return [
            kind
            for kind in CONTACT_KINDS
            if getattr(self, kind) and getattr(self, kind) == getattr(other, kind)
        ]


def normalise_contacts(
    email: str | None, phone: str | None, telegram: str | None, phone_region: str | None
) -> Contacts:
    return Contacts(
        email=normalise_email(email) if email else None,
        phone=normalise_phone(phone, phone_region) if phone else None,
        telegram=normalise_telegram(telegram) if telegram else None,
    )


def tags(values: Iterable[str]) -> list[str]:
    """Interests and skills as tags: trimmed, lower case, each once, in the order given."""
    seen: dict[str, None] = {}
    for value in values:
        tag = " ".join(value.split()).lower()
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# -- referral codes and rules ----------------------------------------------------------------


def new_referral_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    """Codes are case-insensitive on input; spaces and dashes people type are ignored."""
    return "".join(raw.split()).replace("-", "").upper()


def is_well_formed_code(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(c in CODE_ALPHABET for c in code)


def check_referral(newcomer: Contacts, referrer: Contacts, referrer_active: bool) -> None:
    """A code works only while its owner is a member, and never for the owner themselves."""
    if not referrer_active:
        raise RuleViolation(
            "referrer_left", "the owner of this referral code has left the community"
        )
    shared = newcomer.shared_with(referrer)
    if shared:
        raise RuleViolation(
            "self_referral",
            f"a member cannot use their own referral code (same {', '.join(shared)})",
        )


# -- consent and profile changes -------------------------------------------------------------


def consent_at_join(marketing: bool, now: datetime, source: str | None = None) -> dict[str, Any]:
    """Stored consent: each choice with the time it was given (or withdrawn).

    An import records the consent as it was given elsewhere: `now` is then when it was
    recorded there, and `source` says where (a paper form, the old CRM).
    """
    consent: dict[str, Any] = {
        "terms": True,
        "marketing": marketing,
        "terms_at": now,
        "marketing_at": now if marketing else None,
    }
    if source:
        consent["source"] = source
    return consent


def public_consent(consent: Mapping[str, Any]) -> dict[str, bool]:
    """Consent as events carry it ({terms, marketing}); bool() because nx-27017 may store 0/1."""
    return {"terms": bool(consent.get("terms")), "marketing": bool(consent.get("marketing"))}


@dataclass
class ProfileChange:
    """What a PATCH does: fields to set and unset on the document, and the event's `changes`."""

    set_fields: dict[str, Any] = field(default_factory=dict)
    unset_fields: list[str] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changes)


def profile_change(
    current: Mapping[str, Any], requested: Mapping[str, Any], now: datetime
) -> ProfileChange:
    """Compare a requested PATCH (already normalised, only the fields sent) with the member.

    Only fields whose value really changes appear. `contacts` and `consent` change as a whole
    object (new values of every kind), so a projection can `$set` them without merging.
    A contact sent as None is removed; at least one must remain. Consent to the terms
    cannot be withdrawn by PATCH: leaving is DELETE.
    """
    change = ProfileChange()
    for name in PROFILE_FIELDS:
        if name in requested and requested[name] != current.get(name):
            change.set_fields[name] = requested[name]
            change.changes[name] = requested[name]

    before = Contacts.of(current)
    after = Contacts(**{k: requested.get(k, getattr(before, k)) for k in CONTACT_KINDS})
    if after != before:
        if not after.any():
            raise RuleViolation("no_contact", "a member keeps at least one contact")
        for kind, value in after.as_dict().items():
            if value is None and getattr(before, kind) is not None:
                change.unset_fields.append(kind)
            elif value is not None and value != getattr(before, kind):
                change.set_fields[kind] = value
        change.changes["contacts"] = after.as_dict()

    wanted = requested.get("consent")
    if wanted is not None:
        if wanted.get("terms") is False:
            raise RuleViolation(
                "terms_required",
                "consent to the terms cannot be withdrawn while a member; "
                "to leave, DELETE /v1/members/{id}",
            )
        stored = dict(current.get("consent") or {})
        marketing = wanted.get("marketing")
        if marketing is not None and marketing != bool(stored.get("marketing")):
            # The whole subdocument is set at once: nx-27017 keeps booleans only that way.
            stored.update(marketing=marketing, marketing_at=now, terms=bool(stored.get("terms")))
            change.set_fields["consent"] = stored
            change.changes["consent"] = public_consent(stored)
    return change


# -- new members ---------------------------------------------------------------------------


def new_member(
    member_id: str,
    profile: Mapping[str, Any],
    contacts: Contacts,
    consent: dict[str, Any],
    joined_at: datetime,
    referred_by: str | None = None,
) -> dict[str, Any]:
    """The stored document of a member who joins (or is imported), before its referral code.

    `profile` holds the PROFILE_FIELDS as given; they are normalised here, once for both ways
    in (a join and an import).
    """
    return {
        "_id": member_id,
        "display_name": profile["display_name"],
        "region": profile["region"],
        "roles": unique(profile["roles"]),
        "interests": tags(profile["interests"]),
        "skills": tags(profile["skills"]),
        "locale": profile["locale"],
        "timezone": profile["timezone"],
        "consent": consent,
        "referred_by": referred_by,
        "joined_at": joined_at,
        "list_key": list_key(joined_at, member_id),
        "status": "active",
        "version": 1,
        **{k: v for k, v in contacts.as_dict().items() if v},
    }


def member_joined(
    member: Mapping[str, Any], *, imported: bool = False, welcome: bool = True
) -> MemberJoined:
    """The member-joined event of a new member document."""
    return MemberJoined(
        member_id=member["_id"],
        display_name=member["display_name"],
        region=member["region"],
        roles=member["roles"],
        interests=member["interests"],
        skills=member["skills"],
        locale=member["locale"],
        timezone=member["timezone"],
        contacts=Contacts.of(member).as_dict(),
        consent=public_consent(member["consent"]),
        referred_by=member.get("referred_by"),
        joined_at=member["joined_at"],
        imported=imported,
        welcome=welcome,
    )


# -- listing ---------------------------------------------------------------------------------


LIST_KEY_RE = re.compile(r"^\d{13}:[^:]+$")


def list_key(joined_at: datetime, member_id: str) -> str:
    """The listing order and cursor key: join time in epoch ms, then the id breaks ties.

    One unique string that never changes, so `{"list_key": {"$gt": cursor}}` is exact on
    every server. (Not a date comparison: nx-27017 compares dates to the second only.)
    """
    return query.order_key(int(joined_at.timestamp() * 1000), member_id)


def encode_cursor(key: str) -> str:
    """An opaque cursor: the list key of the last member on the page."""
    return query.encode_cursor(key)


def decode_cursor(cursor: str) -> str:
    try:
        return query.decode_cursor(cursor, LIST_KEY_RE)
    except query.InvalidCursor as exc:
        raise RuleViolation("invalid_cursor", "cursor is not one this service returned") from exc


#: Every role a member can have: a listing by interest alone reads one tag per role.
ROLES: tuple[str, ...] = get_args(Role)
LISTED_STATUSES = ("active", "left")


def list_tags(roles: Iterable[str], interests: Iterable[str]) -> list[str]:
    """The tags a member is listed under besides status and region.

    Roles and interests are arrays, which neither server can index for a listing that must
    also stay in join order (nx-27017 compares an array's JSON text on `$eq`). So each member
    has one small entry per role and one per (role, interest) pair, and every filter of the
    member list is one tag: role -> `role:<r>`, role and interest -> `role:<r>|interest:<i>`,
    interest alone -> the same pair for each of the few roles, merged.
    """
    roles, interests = list(roles), list(interests)
    return [f"role:{r}" for r in roles] + [
        f"role:{r}|interest:{i}" for r in roles for i in interests
    ]


def tags_for_filter(role: str | None, interest: str | None) -> list[str]:
    """Which tags hold the members of a filtered listing (none: list the members directly)."""
    if role and interest:
        return [f"role:{role}|interest:{interest}"]
    if role:
        return [f"role:{role}"]
    if interest:
        return [f"role:{r}|interest:{interest}" for r in ROLES]
    return []


def tag_entry_id(member_id: str, tag: str, status: str, region: str | None) -> str:
    """Deterministic, so writing an entry twice is harmless; it changes with any of the
    values it is listed by, so a change adds new entries instead of editing old ones."""
    listed_by = json.dumps([tag, status, region], ensure_ascii=False).encode()
    return f"{member_id}:{hashlib.blake2b(listed_by, digest_size=10).hexdigest()}"


def tag_entries(member: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The listing entries a member should have now, by id (none once erased)."""
    status = member.get("status", "active")
    if status not in LISTED_STATUSES:
        return {}
    region = member.get("region")
    entries: dict[str, dict[str, Any]] = {}
    for tag in list_tags(member.get("roles") or [], member.get("interests") or []):
        entry_id = tag_entry_id(member["_id"], tag, status, region)
        entries[entry_id] = {
            "_id": entry_id,
            "tag": tag,
            "member_id": member["_id"],
            "status": status,
            "region": region,
            "list_key": member["list_key"],
        }
    return entries


def entry_holds(entry: Mapping[str, Any], member: Mapping[str, Any] | None) -> bool:
    """Is this entry one the member has now? (Otherwise it is left over from a change.)"""
    return (
        member is not None
        and entry.get("list_key") == member.get("list_key")
        and entry["_id"] in tag_entries(member)
    )


# -- leaving and erasure ---------------------------------------------------------------------

#: Pending events that carry personal data. At erasure they are dropped from the outbox
#: (nobody has seen them yet, and they must never be published); the others stay.
PERSONAL_EVENT_TYPES = frozenset({"member-joined", "member-updated"})
#: What the anonymous tombstone of an erased member keeps, and why:
#: joined_at, list_key and referred_by keep the referrer's referral count and order right;
#: referral_code stays retired (never handed to someone else, refused with 422 on use).
TOMBSTONE_FIELDS = ("joined_at", "list_key", "referred_by", "referral_code")


def departure(at: datetime) -> dict[str, Any]:
    """When a member left, as a subdocument.

    nx-27017 difference: `$set` of a date by a top-level path stores a string, while a date
    inside a whole subdocument set at once stays a date (on MongoDB both stay dates).
    """
    return {"left_at": at}


def left_at(member: Mapping[str, Any]) -> datetime | None:
    return (member.get("departure") or {}).get("left_at")


def tombstone(
    member: Mapping[str, Any], erased_at: datetime, left_event: Mapping[str, Any]
) -> dict[str, Any]:
    """The anonymous document that replaces an erased member's profile.

    It keeps the outbox entries still pending (but not those with personal data) plus the
    member-left event, so the relay still publishes them; `purge` marks the stream purge
    as still to do (see erasure.py).
    """
    outbox = {
        event_id: event
        for event_id, event in (member.get("outbox") or {}).items()
        if event.get("type") not in PERSONAL_EVENT_TYPES
    }
    outbox[left_event["id"]] = dict(left_event)
    return {
        "_id": member["_id"],
        **{name: member.get(name) for name in TOMBSTONE_FIELDS},
        "status": "erased",
        "departure": {"left_at": left_at(member) or erased_at, "erased_at": erased_at},
        "version": int(member.get("version", 1)) + 1,
        "outbox": outbox,
        "outbox_pending": len(outbox),
        "purge": "pending",
    }
