"""What a failed send may say where it is stored, published and logged: no address, no secret."""

from __future__ import annotations

import traceback
from pathlib import Path

from services.notifier.domain import Recipient
from shared.logs import redact

#: Stored and logged errors are bounded: a peer may answer with anything.
ERROR_MAX = 500


def scrub(error: str, member: Recipient | None) -> str:
    """A channel's error as it may be stored, published and logged: without the member's
    addresses (a bounce quotes the mailbox, a peer may echo the chat), nor anything the log
    redaction would hide (other addresses, tokens), and bounded.

    The member's own contacts are replaced first and exactly, whatever their form, since the
    general patterns cannot know every shape an address takes.
    """
    if member is not None:
        for address in sorted(
            (a.strip() for a in member.contacts.values() if a and a.strip()), key=len, reverse=True
        ):
            for form in {address, address.lstrip("@")}:
                if len(form) >= 3:
                    error = error.replace(form, "<address>")
    return redact(error)[:ERROR_MAX]


def failure(exc: BaseException) -> str:
    """An unexpected exception as stored and logged: its type and where it was raised, not its
    message, which may quote what it choked on (a name, an address, a text)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(exc).__name__}{where}"
