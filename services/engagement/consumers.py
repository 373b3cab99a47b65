"""Engagement event handlers: the members projection, and activity facts from both streams.

Both consumers take whole fetched batches: a batch of member events is one read of the
projection, one insert of the counted transitions, one ordered bulk write of the projection
and one of the standings' copies, then the batch's facts (scoring.py); activity likewise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.engagement import domain
from services.engagement.scoring import Copy, Scoring
from services.engagement.standings import cohort
from services.engagement.store import RANK_FIELDS, EngagementStore
from shared.bus import Bus, BusUnavailable, Consumer
from shared.events import (
    CloudEvent,
    CommentAdded,
    EventData,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    utcnow,
)
from shared.projection import MemberProjection
from shared.store import epoch_ms

log = logging.getLogger("sarafan.engagement")

PROJECTED_FIELDS = ("display_name", "region", "roles", "locale", "timezone", "referred_by")
MEMBER_SUBJECTS = [
    "members.member-joined.*",
    "members.member-updated.*",
    "members.member-left.*",
    "members.referral-made.*",
]
ACTIVITY_SUBJECTS = [
    "engagement.post-created.*",
    "engagement.comment-added.*",
    "engagement.reaction-added.*",
    "engagement.answer-accepted.*",
    "engagement.hours-approved.*",
]
Batch = list[tuple[CloudEvent, EventData]]


def counted(status: str | None, referred: bool, data: EventData) -> tuple[str, dict[str, int]]:
    """The member's counted status after the event, and the change to the community's counters
    (members now, joins, joins by referral) it makes, from the status before it."""
    joined = 1 if status in ("active", "left") else 0
    if isinstance(data, MemberJoined):
        if status is None:
            return "active", {"members": 1, "joins": 1, "referred": int(bool(data.referred_by))}
        return status, {}
    if isinstance(data, MemberLeft):
        if data.erase and status != "erased":
            members = -1 if status == "active" else 0
            return "erased", {"members": members, "joins": -joined, "referred": -joined * referred}
        if not data.erase and status == "active":
            return "left", {"members": -1}
    return status or "", {}


class EngagementHandlers:
    def __init__(
        self,
        store: EngagementStore,
        scoring: Scoring,
        bus: Bus,
        clock: Callable[[], datetime],
        batch_size: int = 100,
    ) -> None:
        self.store = store
        self.scoring = scoring
        self.bus = bus
        self.clock = clock
        self.batch_size = batch_size
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="engagement-members",
                stream="MEMBERS",
                subjects=MEMBER_SUBJECTS,
                handle=self.on_member_event,
                handle_batch=self.on_member_batch,
                batch_size=self.batch_size,
            ),
            Consumer(
                name="engagement-activity",
                stream="ENGAGEMENT",
                subjects=ACTIVITY_SUBJECTS,
                handle=self.on_activity,
                handle_batch=self.on_activity_batch,
                batch_size=self.batch_size,
                # Every effect is guarded by the fact's id (standings, first answers), so the
                # wrapper's processed-ids round trips would only repeat that check.
                dedupe=False,
            ),
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.on_member_batch([(event, data)])

    async def on_member_batch(self, batch: Batch) -> None:
        """Member events in their order: counters, projection, standings' copies, facts."""
        member_ids = {d.member_id for _, d in batch if hasattr(d, "member_id")}
        known = await self.store.members_by_id(member_ids)
        status = {m: doc.get("status") for m, doc in known.items()}
        referred = {m: bool(doc.get("referred_by")) for m, doc in known.items()}
        # Stamped with the time they are written (not the events' own times): folding relies on
        # it (shared/tally.py).
        now = utcnow()
        deltas = []
        copies: dict[str, Copy] = {}
        erased: list[str] = []
        for _, data in batch:
            member_id = getattr(data, "member_id", None)
            if member_id is None or status.get(member_id) == "erased":
                continue  # a replayed event must not bring an erased member's data back
            if isinstance(data, MemberJoined):
                referred.setdefault(member_id, bool(data.referred_by))
            after, change = counted(status.get(member_id), referred.get(member_id, False), data)
            kind = "joined" if isinstance(data, MemberJoined) else after
            deltas.append(self.store.counters.delta(f"{member_id}:{kind}", change, now))
            status[member_id] = after or status.get(member_id)  # type: ignore[assignment]
            for fields, unset in _standing_copies(data):
                copies.setdefault(member_id, Copy()).then(fields, unset)
            if isinstance(data, MemberLeft) and data.erase:
                erased.append(member_id)
        # The counted transitions first: a crash before the projection changes leaves the
        # status as it was, so the retry computes the same deltas (and inserts them once).
        await self.store.counters.add(deltas)
        await self.projection.apply_many(d for _, d in batch)
        for member_id in erased:
            await self.erase(member_id)
        facts: list[domain.Fact] = []
        for event, data in batch:
            facts += domain.facts_from_event(event.id, event.time, data)
        gone = {m for m, s in status.items() if s == "erased"}
        # The standing copies and the facts in one write per member (scoring.py). A fact may
        # name a member this batch does not (a referrer): their status is read there.
        unknown = {f.member_id for f in facts} - set(status)
        gone |= await self.store.erased_among(unknown) if unknown else set()
        await self.scoring.record(
            facts, self.clock(), {m: c for m, c in copies.items() if m not in gone}, gone
        )

    async def on_activity(self, event: CloudEvent, data: EventData) -> None:
        await self.on_activity_batch([(event, data)])

    async def on_activity_batch(self, events: Batch) -> None:
        """A whole fetched batch: first answers noted, then the facts into the standings."""
        facts: list[domain.Fact] = []
        first_answers: dict[str, int] = {}
        for event, data in events:
            facts += domain.facts_from_event(event.id, event.time, data)
            if isinstance(data, CommentAdded) and data.author_id != data.post_author_id:
                at = epoch_ms(data.created_at)
                first_answers[data.post_id] = min(at, first_answers.get(data.post_id, at))
        await self.store.note_first_answers(first_answers)
        await self.scoring.record(facts, self.clock())

    async def erase(self, member_id: str) -> None:
        """Forget the member here, and purge what our own stream says about them: the events
        whose subject is their id, and the post-created events of their posts (titles).
        Purged first: a retry after a failure finds the same posts still attributed."""
        if self.bus.js is None or not self.bus.connected:
            raise BusUnavailable("cannot purge the ENGAGEMENT stream while NATS is away")
        post_ids = await self.store.post_ids_of(member_id)
        await self.store.drop_post_events(post_ids)  # none may be published after the purge
        await self.bus.js.purge_stream("ENGAGEMENT", subject=f"engagement.*.{member_id}")
        for post_id in post_ids:
            await self.bus.js.purge_stream(
                "ENGAGEMENT", subject=f"engagement.post-created.{post_id}"
            )
        await self.store.erase_member(member_id)
        log.info("erased member %s (%d post(s) anonymised)", member_id, len(post_ids))


def _standing_copies(data: EventData) -> list[tuple[dict[str, Any], list[str]]]:
    """What a member's standing copies from a member event (for its indexes)."""
    if isinstance(data, MemberJoined):
        joined = epoch_ms(data.joined_at)
        return [
            (
                {"active": 1, "region": data.region, "joined_ms": joined, "cohort": cohort(joined)},
                [],
            )
        ]
    if isinstance(data, MemberUpdated) and "region" in data.changes:
        return [({"region": data.changes["region"]}, [])]
    if isinstance(data, MemberLeft) and not data.erase:
        return [({"active": 0}, list(RANK_FIELDS))]
    return []
