"""How a marketing e-mail lets its reader leave: the List-Unsubscribe headers and the link shown.

RFC 2369 `List-Unsubscribe` lists where to unsubscribe: the members service's one-click link
(`<public members URL>/unsubscribe/<token>`, signed for the member with the shared secret,
shared/unsubscribe.py) and, when configured, a mailbox (`mailto:`). With the https link comes
RFC 8058's `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, which lets a mailbox provider
unsubscribe the reader with one POST from its own button. Transactional messages carry none
of it (docs/notifier.md, "Unsubscribing").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from shared import unsubscribe

ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class UnsubscribeLinks:
    """What the e-mail channel needs to sign and write the links; each part may be missing."""

    secret: str | None = None
    members_url: str | None = None  # the members service's public base URL
    mailto: str | None = None  # a mailbox that takes unsubscribe requests
    lifetime: timedelta = timedelta(days=90)

    @property
    def one_click(self) -> bool:
        return bool(self.secret and self.members_url)

    def missing(self) -> str | None:
        """Why marketing e-mail would go without a one-click link (None: it will not)."""
        if self.one_click:
            return None
        lacking = [
            name
            for name, value in (
                ("SARAFAN_UNSUBSCRIBE_SECRET", self.secret),
                ("SARAFAN_PUBLIC_MEMBERS_URL", self.members_url),
            )
            if not value
        ]
        fallback = "only the mailto: form" if self.mailto else "no List-Unsubscribe header"
        return f"{' and '.join(lacking)} not set: marketing e-mail carries {fallback}"

    def url(self, member_id: str, now: float | None = None) -> str | None:
        """The member's one-click link, valid for `lifetime` from now."""
        if not (self.secret and self.members_url):
            return None
        expires = int((time.time() if now is None else now) + self.lifetime.total_seconds())
        token = unsubscribe.sign(self.secret, member_id, unsubscribe.MARKETING, expires)
        return f"{self.members_url.rstrip('/')}/unsubscribe/{token}"

    def mailto_uri(self) -> str | None:
        return f"mailto:{self.mailto}?subject=unsubscribe" if self.mailto else None

    def headers(self, member_id: str, now: float | None = None) -> dict[str, str]:
        """The List-Unsubscribe headers of a marketing e-mail to this member ({}: none)."""
        link = self.url(member_id, now)
        uris = [u for u in (link, self.mailto_uri()) if u]
        if not uris:
            return {}
        found = {"List-Unsubscribe": ", ".join(f"<{u}>" for u in uris)}
        if link:
            found["List-Unsubscribe-Post"] = ONE_CLICK
        return found

    def shown(self, member_id: str, now: float | None = None) -> str | None:
        """The link written in the message's body: the one-click page, else the mailto."""
        return self.url(member_id, now) or self.mailto_uri()


def members_url(value: Any) -> str | None:
    """`SARAFAN_PUBLIC_MEMBERS_URL`: an http(s) base URL in ASCII (it goes in a header)."""
    if not value:
        return None
    text = str(value).strip()
    if not text.isascii() or not text.startswith(("https://", "http://")) or " " in text:
        raise ValueError("must be the members service's public http(s) URL, in ASCII")
    return text.rstrip("/")


def mailbox(value: Any) -> str | None:
    """`SARAFAN_UNSUBSCRIBE_MAILTO`: a plain ASCII address (it goes in a header)."""
    if not value:
        return None
    text = str(value).strip().removeprefix("mailto:")
    local, at, domain = text.partition("@")
    if not (at and local and domain and text.isascii()) or quote(text, safe="@.+-_") != text:
        raise ValueError("must be one plain e-mail address such as unsubscribe@example.org")
    return text
