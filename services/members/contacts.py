"""Contacts: one person is one member, so every kind is read into one normal form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.members.violations import RuleViolation

CONTACT_KINDS = ("email", "phone", "telegram")
# Telegram usernames: 5-32 of a-z, 0-9 and _, starting with a letter, not ending with _,
# no double underscore (https://core.telegram.org/method/account.checkUsername).
TELEGRAM_RE = re.compile(r"^[a-z](?!.*__)[a-z0-9_]{3,30}[a-z0-9]$")
TELEGRAM_LINK_RE = re.compile(r"^(?:https?://)?(?:www\.)?(?:t|telegram)\.me/", re.IGNORECASE)


def normalise_email(raw: str) -> str:
    """Case- and space-insensitive email; raises RuleViolation when it is not an address."""
    candidate = "".join(raw.split()).lower()
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise RuleViolation("invalid_email", f"email {raw!r} is not valid: {exc}") from exc
    return checked.normalized.lower()


#: Mail providers that deliver `a.n.n.a@` to `anna@`, and the one domain they all are.
DOTLESS_MAILBOXES = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def canonical_email(email: str) -> str:
    """The mailbox an address reaches, as far as one can tell from the address: case aside,
    `anna+drive@` is `anna@` (a sub-address: most providers deliver it to the same mailbox),
    and at Gmail `a.n.n.a@googlemail.com` is `anna@gmail.com`. Only for comparing people (is
    this newcomer the code's owner?): a member's address is stored as they gave it."""
    local, _, domain = email.lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    domain = DOTLESS_MAILBOXES.get(domain, domain)
    if domain in DOTLESS_MAILBOXES.values():
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


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

    def canonical(self) -> Contacts:
        """The contacts as one person's: the mailbox an email reaches (`canonical_email`),
        the phone in E.164 (as stored), the telegram handle in lower case (Telegram ignores
        case)."""
        return Contacts(
            email=canonical_email(self.email) if self.email else None,
            phone=self.phone,
            telegram=self.telegram.lower() if self.telegram else None,
        )

    def shared_with(self, other: Contacts) -> list[str]:
        """Which contact kinds two people have in common, compared on their canonical forms
        (a self-referral sign: `anna+1@example.org` is Anna)."""
        mine, theirs = self.canonical(), other.canonical()
        return [
            kind
            for kind in CONTACT_KINDS
            if getattr(mine, kind) and getattr(mine, kind) == getattr(theirs, kind)
        ]


def normalise_contacts(
    email: str | None, phone: str | None, telegram: str | None, phone_region: str | None
) -> Contacts:
    return Contacts(
        email=normalise_email(email) if email else None,
        phone=normalise_phone(phone, phone_region) if phone else None,
        telegram=normalise_telegram(telegram) if telegram else None,
    )


def require_contact(email: str | None, phone: str | None, telegram: str | None) -> None:
    """A member is reachable: joining takes at least one contact (a change keeps one: see
    domain.profile_change)."""
    if not (email or phone or telegram):
        raise RuleViolation("no_contact", "give at least one contact: email, phone or telegram")
