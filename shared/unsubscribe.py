"""Signed unsubscribe links: the notifier signs them, the members service verifies them.

A token says which member, for what (the purpose, e.g. withdrawing marketing consent) and until
when, and carries an HMAC-SHA256 of the three under `SARAFAN_UNSUBSCRIBE_SECRET`, a secret the
two services share. Nothing is stored: a link is valid because it verifies, so the members
service needs no record of the e-mails sent.

    <member id, base64url>.<expiry, epoch seconds>.<HMAC-SHA256, base64url>

The purpose is not written in the token, only signed: the endpoint that reads it knows what it
is for, and a token made for one purpose verifies for no other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Annotated

from pydantic import AfterValidator, SecretStr

from shared import weak_secrets

#: What a link from a marketing e-mail does: withdraw the member's marketing consent.
MARKETING = "marketing"
#: A secret shorter than this is refused at start (like every other secret of the platform).
SECRET_MIN_CHARS = 32
#: Longer than any token this module makes; a longer path segment is refused unread.
TOKEN_MAX_CHARS = 400
#: What the MAC covers, besides the fields: a version, so a future layout cannot be confused.
_DOMAIN = b"sarafan-unsubscribe-v1"
_TOKEN_RE = re.compile(r"^([A-Za-z0-9_-]{1,200})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class LinkInvalid(ValueError):
    """The token was not made with this secret (tampered, truncated, or another secret)."""


class LinkExpired(ValueError):
    """The token is genuine but its time is over."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, member_id: str, purpose: str, expires: int) -> bytes:
    signed = b"\x00".join([_DOMAIN, purpose.encode(), member_id.encode(), str(expires).encode()])
    return hmac.new(secret.encode(), signed, hashlib.sha256).digest()


def sign(secret: str, member_id: str, purpose: str, expires: int) -> str:
    """A token for `member_id` and `purpose`, valid until `expires` (epoch seconds)."""
    return f"{_b64(member_id.encode())}.{expires}.{_b64(_mac(secret, member_id, purpose, expires))}"


def verify(secret: str, token: str, purpose: str, now: float) -> str:
    """The member id a token was made for. Raises LinkInvalid when it was not made with this
    secret for this purpose (checked first: a forged token is never "expired"), LinkExpired
    when it is genuine but past its time."""
    found = _TOKEN_RE.fullmatch(token) if len(token) <= TOKEN_MAX_CHARS else None
    if found is None:
        raise LinkInvalid("not an unsubscribe token")
    try:
        member_id = _unb64(found[1]).decode()
        given = _unb64(found[3])
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise LinkInvalid("not an unsubscribe token") from exc
    expires = int(found[2])
    if not hmac.compare_digest(given, _mac(secret, member_id, purpose, expires)):
        raise LinkInvalid("the signature does not match")
    if expires < now:
        raise LinkExpired("the link has expired")
    return member_id


def _strong(value: SecretStr | None) -> SecretStr | None:
    """None or empty: links are off. Otherwise at least SECRET_MIN_CHARS characters.

    A SecretStr, so the settings' repr never shows it; a settings class holding one sets
    `hide_input_in_errors`, so a refused value is not printed either."""
    if value is None or not value.get_secret_value():
        return None
    if len(value.get_secret_value()) < SECRET_MIN_CHARS:
        raise ValueError(
            f"must be at least {SECRET_MIN_CHARS} characters (make one with: python3 -c "
            '"import secrets; print(secrets.token_urlsafe(32))")'
        )
    if weak_secrets.weakness(value.get_secret_value()) is not None:
        raise ValueError("is an example value from the repository: make a secret of your own")
    return value


#: The type of the `SARAFAN_UNSUBSCRIBE_SECRET` setting of the services that sign or verify.
UnsubscribeSecret = Annotated[SecretStr | None, AfterValidator(_strong)]
