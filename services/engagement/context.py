"""What the adapters share: the service's one context (its use cases, the store for plain reads,
its one clock), the routes' one dependency on it, and the use cases' refusals as HTTP errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends

from services.engagement import domain
from services.engagement.contributions import Conflict, Forbidden, NotFound, Refused
from services.engagement.insights import CommunityGauges, Insights
from services.engagement.store import EngagementStore
from services.engagement.usecases import Activity, Hours, MemberEvents, Posts
from shared.clock import Clock
from shared.http import ApiError, not_found
from shared.limits import Request as RequestBody
from shared.service import context_of

log = logging.getLogger("sarafan.engagement")
T = TypeVar("T")


@dataclass
class Engagement:
    """What the adapters use, built once by the composition root (app.py `compose`): the use
    cases (each opens and commits its own unit of work), the store for plain reads, the
    figures, and the one clock."""

    #: The use cases: what members write, volunteer hours, member events, activity.
    posts: Posts
    hours: Hours
    members: MemberEvents
    activity: Activity
    #: Plain reads of the routes (a post, its comments, a member's hours...).
    store: EngagementStore
    rules: domain.Rules
    insights: Insights
    gauges: CommunityGauges
    #: The service's one clock (the runtime's: `build(settings, clock=...)`), for the time of
    #: facts, decisions, scans and figures. Only the stamps that order the store's own writes
    #: (the counters' `written`, an idempotency record's expiry) read real time, by design:
    #: a moved clock must not reorder what the store folds or expires.
    clock: Clock


engagement_of = context_of(Engagement)

#: A route's parameter for the service's context.
EngagementDep = Annotated[Engagement, Depends(engagement_of)]


class Strict(RequestBody):
    """A request body: unknown fields refused, strings stripped, no NaN or infinity; every
    string and list of a subclass has a bound (shared/limits.py)."""


#: The HTTP status of each kind of refusal (any other is 422).
REFUSAL_STATUS: dict[type[Refused], int] = {Forbidden: 403, Conflict: 409}


@contextmanager
def refusals() -> Iterator[None]:
    """A use case's refusals as the HTTP errors they stand for."""
    try:
        yield
    except NotFound as exc:
        raise not_found(exc.what, exc.ident) from None
    except Refused as exc:
        status = REFUSAL_STATUS.get(type(exc), 422)
        raise ApiError(status, exc.code, exc.message, details=exc.details) from None


def rendered(docs: Iterable[Any], render: Callable[[Any], T], what: str) -> list[T]:
    """Each stored document of a page rendered on its own. One that cannot be (written by an
    older version, edited by hand) is logged by id and left out: the page still answers.

    Only the id and the kind of error are logged, never the document's content (a person's
    text or name may be in it).
    """
    items: list[T] = []
    skipped = 0
    for doc in docs:
        try:
            items.append(render(doc))
        except Exception as exc:
            skipped += 1
            ident = doc.get("_id", doc.get("member_id")) if isinstance(doc, dict) else None
            log.warning("left out stored %s %r: %s", what, ident, type(exc).__name__)
    if skipped:
        log.warning("%d stored %s(s) left out of a page", skipped, what)
    return items
