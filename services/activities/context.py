"""What the routes, handlers and jobs share: the service's parts, its one clock, and the use
cases' refusals as HTTP errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request

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
from shared.http import ApiError, not_found
from shared.uow import UnitOfWork


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
    unit_of_work: Callable[[], UnitOfWork]
    #: The time after a shift's end before its confirmed members without a check-in are
    #: no-shows (SARAFAN_NOSHOW_GRACE_MINUTES).
    grace: timedelta
    #: The only place the service reads the time; tests replace it.
    clock: Callable[[], datetime]

    def now(self) -> datetime:
        return self.clock()


def activities_of(request: Request) -> Activities:
    return request.app.state.activities  # type: ignore[no-any-return]


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
