"""What the members service's routes use, made once by the composition root (app.py).

Routes reach it one way: a parameter `members: MembersDep` (FastAPI's `Depends(members_of)`),
never `request.app.state` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.members.erasure import Eraser
from services.members.store import MemberStore
from services.members.usecases import MemberUseCases
from shared.bus import Bus
from shared.clock import Clock
from shared.keys import KeyRing
from shared.scrub import Scrubber
from shared.service import context_of
from shared.skipped import SkippedDocuments


@dataclass(frozen=True)
class Members:
    """The members service's context: its use cases, the store for plain reads, and the
    parts of the runtime and the settings a route needs."""

    use_cases: MemberUseCases
    #: Plain reads (a member, a page of the list, referrals).
    store: MemberStore
    clock: Clock
    #: Starts the purge of an erased member's events (the leave use case kicks it).
    eraser: Eraser
    #: The country whose national phone formats are read; None: international format only.
    phone_region: str | None
    #: Verifies the unsubscribe links the notifier signs; None: links are not set up here.
    unsubscribe_secret: str | None
    #: The API keys every service accepts (kept in NATS; the admin endpoint writes them).
    keys: KeyRing
    #: Whether NATS is there (the keys live in it).
    bus: Bus
    #: The write rate of a key that says none (SARAFAN_KEY_RATE_PER_MINUTE).
    default_key_rate: int
    #: Unreadable documents a list passed over (sarafan_documents_skipped_total).
    skipped: SkippedDocuments
    #: Compacts the store's files after an erasure, so they keep no copy.
    scrubber: Scrubber


members_of = context_of(Members)

MembersDep = Annotated[Members, Depends(members_of)]
