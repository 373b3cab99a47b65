"""Members' rules with no I/O: contact normalisation, referral codes, who may refer whom."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

#: Referral-code alphabet without look-alikes (no 0/O, 1/I/L, 5/S, 8/B, 2/Z, U/V).
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
CODE_LENGTH = 7
TELEGRAM_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{4,31}$")


class RuleViolation(ValueError):
    """A join or change that the community's rules refuse (HTTP 422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalise_email(raw: str) -> str:
    """Case- and space-insensitive email; raises RuleViolation when it is not an address."""
    candidate = "".join(raw.split()).lower()
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise RuleViolation("invalid_email", f"email {raw!r} is not valid: {exc}") from exc
    return checked.normalized.lower()


def normalise_phone(raw: str) -> str:
    """Digits with a leading + (E.164 shape); separators and spaces are dropped."""
    digits = re.sub(r"[\s\-().]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("8") and len(digits) == 11:  # Russian trunk prefix: 8 XXX = +7 XXX
        digits = "+7" + digits[1:]
    if not digits.startswith("+"):
        digits = "+" + digits
    if not re.fullmatch(r"\+[1-9]\d{7,14}", digits):
        raise RuleViolation("invalid_phone", f"phone {raw!r} is not a valid international number")
    return digits


def normalise_telegram(raw: str) -> str:
    handle = raw.strip().removeprefix("https://t.me/").removeprefix("@")
    if not TELEGRAM_RE.fullmatch(handle):
        raise RuleViolation(
            "invalid_telegram", f"telegram handle {raw!r} must be 5-32 letters, digits or _"
        )
    return handle.lower()


def new_referral_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    return "".join(raw.split()).upper()


@dataclass(frozen=True)
class Contacts:
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None

    def shared_with(self, other: Contacts) -> list[str]:
        """Which contact kinds two people have in common (a self-referral sign)."""
        return [
            kind
            for kind in ("email", "phone", "telegram")
            if getattr(self, kind) and getattr(self, kind) == getattr(other, kind)
        ]


def check_referral(newcomer: Contacts, referrer: Contacts, referrer_active: bool) -> None:
    if not referrer_active:
        raise RuleViolation("referrer_left", "the owner of this referral code has left the community")
    shared = newcomer.shared_with(referrer)
    if shared:
        raise RuleViolation(
            "self_referral",
            f"a member cannot use their own referral code (same {', '.join(shared)})",
        )
