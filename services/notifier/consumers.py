"""Notifier event handlers: keep the members projection, turn events into notices and fan out."""

from __future__ import annotations

import logging

from services.notifier import rules
from services.notifier.fanout import Fanout
from services.notifier.store import NotifierStore
from shared.bus import Bus, Consumer
from shared.events import (
    CampaignStarted,
    CloudEvent,
    EventData,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
)

log = logging.getLogger("sarafan.notifier")

ENGAGEMENT_SUBJECTS = [
    f"engagement.{t}.*"
    for t in (
        "level-changed",
        "comment-added",
        "answer-accepted",
        "member-drifting",
        "question-unanswered",
    )
]


class NotifierHandlers:
    def __init__(self, store: NotifierStore, fanout: Fanout, bus: Bus) -> None:
        self.store = store
        self.fanout = fanout
        self.bus = bus

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="notifier-members",
                stream="MEMBERS",
                subjects=["members.>"],
                handle=self.on_event,
                handle_batch=self.on_member_batch,
            ),
            Consumer(
                name="notifier-engagement",
                stream="ENGAGEMENT",
                subjects=ENGAGEMENT_SUBJECTS,
                handle=self.on_event,
            ),
            # A campaign's fan-out to a large audience takes seconds; the kernel's in-progress
            # acks keep JetStream from redelivering it while it is still being written.
            Consumer(
                name="notifier-campaigns",
                stream="CAMPAIGNS",
                subjects=["campaigns.>"],
                handle=self.on_event,
            ),
        ]

    async def on_event(self, event: CloudEvent, data: EventData) -> None:
        await self._project(data)
        await self._notify(event, data)

    async def on_member_batch(self, batch: list[tuple[CloudEvent, EventData]]) -> None:
        """Joins arriving together (an import, a busy day) are projected and welcomed in bulk;
        anything else keeps its order, one by one."""
        run: list[tuple[CloudEvent, MemberJoined]] = []
        for event, data in batch:
            if isinstance(data, MemberJoined):
                run.append((event, data))
                continue
            await self._welcome(run)
            run = []
            await self.on_event(event, data)
        await self._welcome(run)

    async def _welcome(self, joined: list[tuple[CloudEvent, MemberJoined]]) -> None:
        if not joined:
            return
        await self.store.project_joined([d.model_dump(mode="json") for _, d in joined])
        members = await self.store.members_by_id(d.member_id for _, d in joined)
        items = []
        for event, data in joined:
            if data.member_id in members:
                for notice in rules.notices(data, rules.Lookups()):
                    items.append((event, notice.message, members[data.member_id]))
        await self.fanout.deliver(items)

    async def _project(self, data: EventData) -> None:
        if isinstance(data, MemberJoined):
            await self.store.project_joined([data.model_dump(mode="json")])
        elif isinstance(data, MemberUpdated):
            await self.store.project_update(data.member_id, data.changes)
        elif isinstance(data, MemberLeft):
            if data.erase:
                await self.store.erase_member(data.member_id, data.left_at)
                await self._purge_stream(data.member_id)
            else:
                await self.store.member_left(data.member_id, data.left_at)
        elif isinstance(data, LevelChanged):
            await self.store.project_level(data.member_id, data.new_level)
        elif isinstance(data, CampaignStarted):
            await self.store.remember_campaign(data.campaign_id, data.name)

    async def _purge_stream(self, member_id: str) -> None:
        """The notifier's own events about an erased member leave its stream too (by subject)."""
        if self.bus.js is None:
            raise ConnectionError("NATS is not connected: erasure retried")
        await self.bus.js.purge_stream("NOTIFIER", subject=f"notifier.*.{member_id}")

    async def _notify(self, event: CloudEvent, data: EventData) -> None:
        wanted = rules.campaign_needed(data)
        lookups = rules.Lookups(
            names=await self.store.names(rules.names_needed(data)),
            campaigns=await self.store.campaign_names([wanted] if wanted else []),
        )
        for notice in rules.notices(data, lookups):
            count = await self.fanout.notify(event, notice)
            log.info("%s → %s for %d member(s)", event.type, notice.message.template, count)
