"""What the routes, handlers and jobs share, made once by the composition root (`app.compose`):
the service's parts, its one clock, and the use cases' refusals as HTTP errors. Routes reach it
one way: a parameter `a: ActivitiesDep`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends

from services.activities.domain import Conflict, NotFound, Refused
from services.activities.store import ActivitiesStore
from services.activities.usecases import (
    Attendance,
    CheckinLinks,
    CommunityGauges,
    Ledger,
    MembersFollower,
    Planning,
    ShiftTally,
    SignUps,
)
from shared.http import ApiError, WriteLimits, not_found
from shared.service import context_of
from shared.skipped import SkippedDocuments


@dataclass
class Activities:
    store: ActivitiesStore
    ledger: Ledger
    signups: SignUps
    planning: Planning
    attendance: Attendance
    tally: ShiftTally
    links: CheckinLinks
    members: MembersFollower
    gauges: CommunityGauges
    #: The time after a shift's end before its confirmed members without a check-in are
    #: no-shows (SARAFAN_NOSHOW_GRACE_MINUTES).
    grace: timedelta
    #: The only place the service reads the time: the runtime's clock (`compose(settings,
    #: clock)`), which tests move (tests/helpers.py `MovableClock`).
    clock: Callable[[], datetime]
    #: Stored documents a list left out (`sarafan_documents_skipped_total`).
    skipped: SkippedDocuments
    #: Each check-in link's rate of actions on the page (one per service process).
    page_limits: WriteLimits

    def now(self) -> datetime:
        return self.clock()


activities_of = context_of(Activities)

ActivitiesDep = Annotated[Activities, Depends(activities_of)]


@contextmanager
def refusals() -> Iterator[None]:
    """A use case's refusals as the HTTP errors they stand for (nothing was stored)."""
    try:
        yield
    except NotFound as exc:
        raise not_found(exc.what, exc.ident) from None
    except Conflict as exc:
        raise ApiError(409, exc.code, exc.message, exc.details) from None
    except Refused as exc:
        raise ApiError(422, exc.code, exc.message, exc.details) from None
