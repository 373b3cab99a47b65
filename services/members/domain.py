"""Members' rules with no I/O: joining, referrals, consent, profile changes, leaving.

Each decision returns the new state and the events it raises (event data; the use cases wrap
them in envelopes and hand both to a unit of work). Contacts are normalised in contacts.py,
the listing's keys and entries are in listing.py.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.members.contacts import (
    CONTACT_KINDS,
    Contacts,
    normalise_contacts,
    require_contact,
)
from services.members.listing import list_key
from services.members.violations import RuleViolation
from shared.events import EventData, MemberJoined, MemberLeft, ReferralMade
from shared.tags import normalise_tags

#: Referral-code alphabet without look-alikes (no 0/O, 1/I/L, 5/S, 8/B, 2/Z, U/V).
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
CODE_LENGTH = 7
#: Profile fields a member may change with PATCH (besides contacts and consent).
PROFILE_FIELDS = ("display_name", "region", "roles", "interests", "skills", "locale", "timezone")
#: Roles that carry authority (coordinators and staff decide on hours, get question alerts):
#: they are granted by an API key with the `admin` scope, never claimed by whoever calls.
GRANTED_ROLES: frozenset[str] = frozenset({"coordinator", "staff"})


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def granted_roles(roles: Iterable[str], already: Iterable[str] = ()) -> list[str]:
    """The roles among `roles` that need `admin` to be given: coordinator and staff, unless the
    member holds them already (keeping a role one has is not granting it)."""
    return sorted(GRANTED_ROLES.intersection(roles) - set(already))


# -- referral codes and rules ----------------------------------------------------------------


def new_referral_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    """Codes are case-insensitive on input; spaces and dashes people type are ignored."""
    return "".join(raw.split()).replace("-", "").upper()


def is_well_formed_code(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(c in CODE_ALPHABET for c in code)


def check_referral(newcomer: Contacts, referrer: Contacts, referrer_active: bool) -> None:
    """A code works only while its owner is a member, and never for the owner themselves:
    contacts are compared on their canonical forms (contacts.canonical_email), so a
    sub-address or a dotted Gmail address of the owner is the owner. The answer does not say
    which contact matched."""
    if not referrer_active:
        raise RuleViolation(
            "referrer_left", "the owner of this referral code has left the community"
        )
    if newcomer.shared_with(referrer):
        raise RuleViolation("self_referral", "a member cannot use their own referral code")


# -- consent -----------------------------------------------------------------------------------


def require_terms(terms: bool) -> None:
    """Nobody joins without explicit consent to the community's terms."""
    if not terms:
        raise RuleViolation(
            "terms_required", "joining needs consent to the terms (consent.terms must be true)"
        )


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


# -- joining -----------------------------------------------------------------------------------


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
        "interests": normalise_tags(profile["interests"]),
        "skills": normalise_tags(profile["skills"]),
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


@dataclass
class Joined:
    """A join decided: the member's document (before its referral code) and its events."""

    member: dict[str, Any]
    events: list[EventData]


def join(
    member_id: str,
    profile: Mapping[str, Any],
    contacts: Contacts,
    *,
    terms: bool,
    marketing: bool,
    now: datetime,
    referrer: Mapping[str, Any] | None = None,
    code: str = "",
) -> Joined:
    """A person joins: consent to the terms, one contact at least, and a referrer (the owner
    of the code they gave) who is still a member and is not themselves."""
    require_terms(terms)
    require_contact(contacts.email, contacts.phone, contacts.telegram)
    if referrer is not None:
        check_referral(
            contacts,
            Contacts.of(referrer),
            referrer_active=referrer.get("status", "active") == "active",
        )
    member = new_member(
        member_id,
        profile,
        contacts,
        consent_at_join(marketing, now),
        now,
        referred_by=referrer["_id"] if referrer is not None else None,
    )
    events: list[EventData] = [member_joined(member)]
    if referrer is not None:
        events.append(
            ReferralMade(
                referral_id=str(uuid.uuid4()),
                referrer_id=referrer["_id"],
                referred_id=member_id,
                code=code,
                at=now,
            )
        )
    return Joined(member, events)


# -- profile changes ---------------------------------------------------------------------------


def normalise_change(requested: Mapping[str, Any], phone_region: str | None) -> dict[str, Any]:
    """The fields a PATCH sent (only those), normalised as they are at join."""
    normal = dict(requested)
    contacts = normalise_contacts(
        normal.get("email"), normal.get("phone"), normal.get("telegram"), phone_region
    )
    for kind in CONTACT_KINDS:
        if kind in normal:
            normal[kind] = getattr(contacts, kind)
    for name in ("interests", "skills"):
        if name in normal:
            normal[name] = normalise_tags(normal[name])
    if "roles" in normal:
        normal["roles"] = unique(normal["roles"])
    return normal


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
    _contacts_change(change, current, requested)
    _consent_change(change, current, requested.get("consent"), now)
    return change


def _contacts_change(
    change: ProfileChange, current: Mapping[str, Any], requested: Mapping[str, Any]
) -> None:
    before = Contacts.of(current)
    after = Contacts(**{k: requested.get(k, getattr(before, k)) for k in CONTACT_KINDS})
    if after == before:
        return
    if not after.any():
        raise RuleViolation("no_contact", "a member keeps at least one contact")
    for kind, value in after.as_dict().items():
        if value is None and getattr(before, kind) is not None:
            change.unset_fields.append(kind)
        elif value is not None and value != getattr(before, kind):
            change.set_fields[kind] = value
    change.changes["contacts"] = after.as_dict()


def _consent_change(
    change: ProfileChange,
    current: Mapping[str, Any],
    wanted: Mapping[str, Any] | None,
    now: datetime,
) -> None:
    if wanted is None:
        return
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


# -- leaving and erasure ---------------------------------------------------------------------

#: Pending events that carry personal data. At erasure they are dropped from the tombstone
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


def leaving(member: Mapping[str, Any], erase: bool, now: datetime) -> MemberLeft | None:
    """The member-left event of a DELETE, or None when it changes nothing: an erased member,
    or one who left already and is not asking to be erased now (repeats are harmless)."""
    status = member.get("status", "active")
    if status == "erased" or (status == "left" and not erase):
        return None
    return MemberLeft(member_id=member["_id"], erase=erase, left_at=left_at(member) or now)


def kept_at_erasure(pending: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Of the events an erased member's document still holds unpublished, those that go out
    all the same: the ones without personal data."""
    return [e for e in pending if e.get("type") not in PERSONAL_EVENT_TYPES]


def tombstone(member: Mapping[str, Any], erased_at: datetime) -> dict[str, Any]:
    """The anonymous document that replaces an erased member's profile (read whole); the
    store adds the events it still carries (store.erased_document). `purge` marks the stream
    purge as still to do (see erasure.py).
    """
    return {
        "_id": member["_id"],
        **{name: member.get(name) for name in TOMBSTONE_FIELDS},
        "status": "erased",
        "departure": {"left_at": left_at(member) or erased_at, "erased_at": erased_at},
        "version": int(member.get("version", 1)) + 1,
        "purge": "pending",
    }
