"""Engagement event handlers: the members projection, and activity facts from both streams."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.engagement import domain
from services.engagement.scoring import Scoring
from services.engagement.store import EngagementStore
from shared.bus import Bus, BusUnavailable, Consumer
from shared.events import (
    CloudEvent,
    CommentAdded,
    EventData,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
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
            ),
            Consumer(
                name="engagement-activity",
                stream="ENGAGEMENT",
                subjects=ACTIVITY_SUBJECTS,
                handle=self.on_activity,
                handle_batch=self.on_activity_batch,
                batch_size=self.batch_size,
                # Every effect is guarded by the fact's id (activity buckets, level changes),
                # so the wrapper's processed-ids round trips would only repeat that check.
                dedupe=False,
            ),
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        if isinstance(data, (MemberJoined, MemberUpdated)):
            known = await self.store.member(data.member_id)
            if known is not None and known.get("status") == "erased":
                return  # a replayed event must not bring an erased member's data back
        await self.projection.apply(data)
        if isinstance(data, MemberLeft) and data.erase:
            await self.erase(data.member_id)
        await self.scoring.record(domain.facts_from_event(event.id, event.time, data), self.clock())

    async def on_activity(self, event: CloudEvent, data: EventData) -> None:
        await self.on_activity_batch([(event, data)])

    async def on_activity_batch(self, events: list[tuple[CloudEvent, EventData]]) -> None:
        """A whole fetched batch: its facts in one bulk write, then the levels it moved."""
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
        await self.bus.js.purge_stream("ENGAGEMENT", subject=f"engagement.*.{member_id}")
        for post_id in post_ids:
            await self.bus.js.purge_stream(
                "ENGAGEMENT", subject=f"engagement.post-created.{post_id}"
            )
        await self.store.erase_member(member_id)
        log.info("erased member %s (%d post(s) anonymised)", member_id, len(post_ids))
