"""Notifier event handlers: keep the members projection, turn events into notices and fan out."""

from __future__ import annotations

import logging
from typing import Any

from services.notifier import rules
from services.notifier.domain import Message
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
from shared.logs import event_context

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
                handle_batch=self.on_notice_batch,
            ),
            # A campaign's fan-out to a large audience takes seconds; the kernel's in-progress
            # acks keep JetStream from redelivering it while it is still being written.
            Consumer(
                name="notifier-campaigns",
                stream="CAMPAIGNS",
                subjects=["campaigns.>"],
                handle=self.on_event,
                handle_batch=self.on_notice_batch,
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
        """A run of joins in a handful of round trips whatever its length: the projection in
        one bulk write, one read of the projected members, the welcomes in one insert_many,
        their notification-sent events handed to the Announcer (`flush_many`, 200 a time)."""
        if not joined:
            return
        await self.store.project_joined([d.model_dump(mode="json") for _, d in joined])
        # welcome=False (an import that did not ask for welcomes) is projected, never welcomed.
        welcomed = [(e, d) for e, d in joined if d.welcome]
        if not welcomed:
            return
        members = await self.store.members_by_id(d.member_id for _, d in welcomed)
        items = []
        for event, data in welcomed:
            if data.member_id in members:
                for notice in rules.notices(data, rules.Lookups()):
                    items.append((event, notice.message, members[data.member_id]))
        await self.fanout.deliver(items)

    async def on_notice_batch(self, batch: list[tuple[CloudEvent, EventData]]) -> None:
        """A fetched batch of engagement or campaign events in a handful of round trips.

        The projection first, in bulk (levels, campaign names); then one read of every member
        the batch's notices go to, and of the campaigns they name; then every notice
        to listed members (the post's author, the asker, the member who levelled up, ...)
        written by one `Fanout.deliver` (one budget write, one insert, one digest write) and
        announced together. A notice with an audience (coordinators of a region, a campaign's
        audience) keeps its own fan-out; the member notices before it are delivered first,
        so budgets are spent in the events' order, as one by one. If anything raises, the
        consumer wrapper handles the batch again one by one: every write is keyed by the event
        (delivery ids, budget entries), so what was already written is not written twice.
        """
        datas = [d for _, d in batch]
        if any(isinstance(d, MemberJoined | MemberUpdated | MemberLeft) for d in datas):
            # Member events change what later ones read: they go one by one (the wrapper).
            raise ValueError("member events are not batched here")
        await self._project_batch(datas)
        # Who receives a listed notice never depends on names: a first pass says whom to read.
        # Names of mentioned members are not read: deliveries keep their ids (texts.py).
        listed = {m for d in datas for n in rules.notices(d, rules.Lookups()) for m in n.member_ids}
        members = await self.store.members_by_id(listed)
        lookups = rules.Lookups(
            campaigns=await self.store.campaign_names(
                c for d in datas if (c := rules.campaign_needed(d))
            ),
        )
        items: list[tuple[CloudEvent, Message, dict[str, Any]]] = []
        for event, data in batch:
            for notice in rules.notices(data, lookups):
                if notice.member_ids:
                    items += [
                        (event, notice.message, members[m])
                        for m in notice.member_ids
                        if m in members and m not in notice.exclude
                    ]
                    continue
                await self.fanout.deliver(items)
                items = []
                with event_context(event.id, event.correlationid):
                    count = await self.fanout.notify(event, notice)
                    log.info("%s → %s for %d member(s)", event.type, notice.message.template, count)
        await self.fanout.deliver(items)

    async def _project_batch(self, datas: list[EventData]) -> None:
        """What a batch changes in the projection, one bulk write per kind, before its notices.

        The same outcome as one by one: a member's last level in the batch wins, and what the
        notices read (contacts, preferences, names) is not what these events change. (The
        level matters to campaign audiences, and a milestone finds the name of a campaign
        started earlier in the same batch.)
        """
        levels: dict[str, str] = {}
        campaigns: dict[str, str] = {}
        for data in datas:
            if isinstance(data, LevelChanged):
                levels[data.member_id] = data.new_level
            elif isinstance(data, CampaignStarted):
                campaigns[data.campaign_id] = data.name
        await self.store.project_levels(levels)
        await self.store.remember_campaigns(campaigns)

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
            campaigns=await self.store.campaign_names([wanted] if wanted else [])
        )
        for notice in rules.notices(data, lookups):
            count = await self.fanout.notify(event, notice)
            log.info("%s → %s for %d member(s)", event.type, notice.message.template, count)
