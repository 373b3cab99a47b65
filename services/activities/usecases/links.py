"""Check-in links: what a coordinator on site opens instead of holding an API key.

The link's token is random (256 bits), shown once in the answer and kept only as its SHA-256
(`checkin_links`, keyed by it): a page resolving a token is one primary-key read of a hash, so
neither its timing nor its answer says anything about tokens close to a real one. A link lasts
until the activity ends; making a new one revokes the previous, and so does `DELETE`. The link
remembers who made it (`recorded_by`: the coordinator's member id, else `key:<API key id>`):
what the page records is recorded by them. The page (`page.py`) calls the same use cases as the
API (`Attendance.record`), with `open` first.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.activities.domain import Conflict, NotFound
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from shared.clock import Clock, epoch_ms, from_ms
from shared.documents import Doc

#: Where a link's page is served, below the service's public address.
CHECKIN_PATH = "/checkin/"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime
    activity_id: str


#: Why a link opens nothing: never made or revoked (the two look alike: a revoked link is
#: deleted), past the activity's end, or its activity cancelled.
UNKNOWN, EXPIRED, CANCELLED = "unknown", "expired", "cancelled"


@dataclass(frozen=True)
class Opened:
    """What a token opens: the activity and who records through it, or why nothing."""

    activity: Doc | None
    #: The coordinator the link was made for (`recorded_by` of what the page records).
    recorded_by: str = ""
    #: The link's stored id (the token's hash): a name for it that is not the credential.
    link_id: str = ""
    refused: str | None = None


class CheckinLinks:
    def __init__(
        self,
        store: ActivitiesStore,
        unit_of_work: Callable[[], ActivitiesUnitOfWork],
        public_url: str,
        clock: Clock,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    async def create(self, activity_id: str, recorded_by: str, now: datetime | None = None) -> Link:
        """A new link for the activity (the previous one stops working); what its page records
        is `recorded_by` the coordinator who made it."""
        now = now or self.clock()
        activity = await self.store.activity(activity_id)
        if activity is None:
            raise NotFound("activity", activity_id)
        if activity["status"] != "published":
            raise Conflict(
                "activity_not_published", f"activity {activity_id} is {activity['status']}"
            )
        ends_ms = int(activity["ends_ms"])
        if ends_ms <= epoch_ms(now):
            raise Conflict("activity_ended", f"activity {activity_id} has ended")
        await self.revoke(activity_id)
        token = secrets.token_urlsafe(32)
        link = {
            "_id": token_hash(token),
            "activity_id": activity_id,
            "expires_ms": ends_ms,
            "created_ms": epoch_ms(now),
            "recorded_by": recorded_by,
        }
        async with self.unit_of_work() as uow:  # made on leaving, after the revoke
            uow.links.insert(link)
        return Link(f"{self.public_url}{CHECKIN_PATH}{token}", from_ms(ends_ms), activity_id)

    async def revoke(self, activity_id: str) -> int:
        """Revoke the activity's link (none is fine); NotFound for an unknown activity."""
        if await self.store.activity(activity_id) is None:
            raise NotFound("activity", activity_id)
        async with self.unit_of_work() as uow:  # committed here: its count is the answer
            done = await uow.commit(uow.links.revoke(activity_id))
        return int(done.deleted_count)

    async def open(self, token: str, now: datetime | None = None) -> Opened:
        """The activity a link opens while it is valid, else why not (unknown or revoked,
        expired, the activity cancelled)."""
        now = now or self.clock()
        if not token or len(token) > 200:
            return Opened(None, refused=UNKNOWN)
        link = await self.store.links.find_one({"_id": token_hash(token)})
        if link is None:
            return Opened(None, refused=UNKNOWN)
        if int(link["expires_ms"]) <= epoch_ms(now):
            return Opened(None, refused=EXPIRED)
        activity = await self.store.activity(link["activity_id"])
        if activity is None:
            return Opened(None, refused=UNKNOWN)
        if activity["status"] != "published":
            return Opened(None, refused=CANCELLED)
        # Links made before links remembered their maker record as the link itself.
        recorded_by = link.get("recorded_by") or f"link:{link['_id'][:12]}"
        return Opened(activity, recorded_by, link["_id"])

    async def resolve(self, token: str, now: datetime) -> Doc | None:
        """The activity a link opens, while it is valid; None otherwise."""
        return (await self.open(token, now)).activity
