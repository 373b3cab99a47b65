"""What the HTTP routes share: the service's parts, its one clock, and who may do what."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request

from services.engagement import domain
from services.engagement.insights import CommunityGauges, Insights
from services.engagement.scoring import Scoring
from services.engagement.store import Doc, EngagementStore
from shared.http import ApiError
from shared.limits import Request as RequestBody
from shared.outbox import Relay

log = logging.getLogger("sarafan.engagement")
T = TypeVar("T")

DECIDER_ROLES = ("coordinator", "staff")


@dataclass
class Engagement:
    store: EngagementStore
    rules: domain.Rules
    scoring: Scoring
    insights: Insights
    gauges: CommunityGauges
    relay: Relay
    #: The only place the service reads the time; tests may replace it.
    clock: Callable[[], datetime]


def engagement_of(request: Request) -> Engagement:
    return request.app.state.engagement  # type: ignore[no-any-return]


class Strict(RequestBody):
    """A request body: unknown fields refused, strings stripped, no NaN or infinity; every
    string and list of a subclass has a bound (shared/limits.py)."""


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


async def active_member(e: Engagement, member_id: str) -> Doc:
    """The member from the projection, or 422: a body naming an unknown or departed member."""
    member = await e.store.member(member_id)
    if member is None:
        raise ApiError(422, "unknown_member", f"member {member_id} is not known to engagement")
    if member.get("status") != "active":
        raise ApiError(422, "member_left", f"member {member_id} has left the community")
    return member


async def decider(e: Engagement, by: str, member_id: str) -> Doc:
    """A coordinator or staff member deciding on someone else's hours, or 403."""
    member = await active_member(e, by)
    if not set(member.get("roles") or ()) & set(DECIDER_ROLES):
        raise ApiError(403, "forbidden", "only a coordinator or staff member may decide on hours")
    if by == member_id:
        raise ApiError(403, "forbidden", "a member cannot decide on their own hours")
    return member
