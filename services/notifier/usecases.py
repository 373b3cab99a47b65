"""The notifier's use cases: what happens for each event it consumes and each request it serves.

`NotifierUseCases` holds them, one method each (the activities events' ones it takes from
`ActivityNotices`, activity_usecases.py); the composition root (`app.compose`) builds it once.
The event handlers (`consumers.py`, given it) and the HTTP routes (`api.py`, reaching it as
`ctx.use_cases`, context.py) are thin adapters over it: they parse, call one of its methods,
and map its errors. The rules they apply live in the
domain (`rules.py` which event becomes which message, `projection.py` what a member event
changes, `domain.py` where and when a message goes); the documents are read and written by the
store; fan-out (`fanout.py`) writes a message's deliveries, one unit of work per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.notifier import projection, rules
from services.notifier.activity_usecases import ActivityNotices
from services.notifier.domain import Preferences
from services.notifier.fanout import Fanout, Item
from services.notifier.reminder_job import Reminders
from services.notifier.store import NotifierStore
from services.notifier.texts import delivery_text, mentioned
from shared.bus import STREAMS
from shared.documents import Doc
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

Batch = list[tuple[CloudEvent, EventData]]
#: The notifier's own stream, where its events about a member are erased on erasure.
OWN_STREAM = STREAMS["notifier"]


class StreamEraser(Protocol):
    async def erase(self, stream: str, subject: str) -> object: ...


class MemberNotFound(LookupError):
    """No active member with this id in the projection (HTTP 404)."""

    def __init__(self, member_id: str) -> None:
        super().__init__(member_id)
        self.member_id = member_id


#: Member events change what later events read: they are never planned together with others.
MEMBER_STATE = (MemberJoined, MemberUpdated, MemberLeft)


async def _project(store: NotifierStore, datas: list[EventData]) -> None:
    """What a batch changes in the projection, one bulk write per kind, before its notices.

    The same outcome as one by one: a member's last level in the batch wins, and what the
    notices read (contacts, preferences, names) is not what these events change. (The level
    matters to campaign audiences, and a milestone finds the name of a campaign started
    earlier in the same batch.)
    """
    levels = {d.member_id: d.new_level for d in datas if type(d) is LevelChanged}
    campaigns = {d.campaign_id: d.name for d in datas if type(d) is CampaignStarted}
    await store.project_levels(levels)
    await store.remember_campaigns(campaigns)


@dataclass(frozen=True)
class InboxPage:
    """A page of a member's in-app messages as stored, and the names their texts show now."""

    docs: list[Doc]
    recipient: str
    names: dict[str, str]

    def text(self, doc: Mapping[str, Any]) -> tuple[str, str]:
        """(title, body) rendered now: a member named in it and erased since is not named."""
        return delivery_text(doc, self.recipient, self.names)


async def _active_member(store: NotifierStore, member_id: str) -> Doc:
    doc = await store.member(member_id)
    if doc is None or doc.get("status") != "active":
        raise MemberNotFound(member_id)
    return doc


class NotifierUseCases(ActivityNotices):
    """What the notifier does for each event it consumes and each request it serves, with the
    store, the fan-out (whose units of work write the deliveries), the bus (which erases its own
    events about an erased member) and the reminders; built once by `app.compose`."""

    def __init__(
        self, store: NotifierStore, fanout: Fanout, bus: StreamEraser, reminders: Reminders
    ) -> None:
        super().__init__(store, fanout, reminders)
        self.bus = bus

    # -- member events --------------------------------------------------------------------------

    async def welcome(self, joined: list[tuple[CloudEvent, MemberJoined]]) -> None:
        """Project joined members and welcome them, in a handful of round trips however many
        joined together (an import, a busy day): the projection in one bulk write, one read of the
        projected members, the welcomes in one unit of work (`Fanout.deliver`)."""
        if not joined:
            return
        await self.store.project_joined(
            {d.member_id: projection.joined(d) for _, d in joined},
            {
                d.member_id: projection.interest_entries(d.member_id, d.interests, d.region)
                for _, d in joined
            },
        )
        # welcome=False (an import that did not ask for welcomes) is projected, never welcomed.
        welcomed = [(e, d) for e, d in joined if d.welcome]
        if not welcomed:
            return
        members = await self.store.members_by_id(d.member_id for _, d in welcomed)
        items: list[Item] = [
            (event, notice.message, members[data.member_id])
            for event, data in welcomed
            if data.member_id in members
            for notice in rules.notices(data, rules.Lookups())
        ]
        await self.fanout.deliver(items)

    async def update_member(self, data: MemberUpdated) -> None:
        """A member's new profile, contacts or consent; a new address unblocks its channel."""
        current = await self.store.member(data.member_id)
        if current is None or current.get("status") == "erased":
            return
        await self.store.update_member(data.member_id, projection.updated(current, data.changes))
        interests = projection.interests_changed(data.member_id, current, data.changes)
        if interests is not None:
            await self.store.write_interests(interests)

    async def member_left(self, data: MemberLeft) -> None:
        """A member who left gets nothing more; one who asked to be erased is forgotten, and the
        notifier's own events about them leave its stream (by subject)."""
        if data.erase:
            await self.store.erase_member(data.member_id, data.left_at)
            await self.bus.erase(OWN_STREAM, f"notifier.*.{data.member_id}")
        else:
            await self.store.member_left(data.member_id, data.left_at)
            await self.store.cancel_waiting(data.member_id)

    # -- events that become messages --------------------------------------------------------------

    async def notify(self, batch: Batch) -> None:
        """The messages of a batch of events (engagement, campaigns, referrals), in a handful of
        round trips whatever its length.

        What the batch changes in the projection first, in bulk (levels, campaign names); then one
        read of every member the batch's notices go to, and of the campaigns they name; then every
        notice to listed members (the post's author, the asker, the member who levelled up, ...)
        written by one `Fanout.deliver`. A notice with an audience (coordinators of a region, a
        campaign's audience) keeps its own fan-out; the member notices before it are delivered
        first, so budgets are spent in the events' order, as one by one. If anything raises, the
        bus hands the batch over again one event at a time: every write is keyed by the event
        (delivery ids, budget entries), so what was already written is not written twice.
        """
        datas = [d for _, d in batch]
        if any(isinstance(d, MEMBER_STATE) for d in datas):
            raise ValueError("member events are handled by welcome, update_member, member_left")
        await _project(self.store, datas)
        # Who receives a listed notice never depends on names: a first pass says whom to read.
        # Names of mentioned members are not read: deliveries keep their ids (texts.py).
        listed = {m for d in datas for x in rules.notices(d, rules.Lookups()) for m in x.member_ids}
        members = await self.store.members_by_id(listed)
        wanted = (c for d in datas if (c := rules.campaign_needed(d)))
        lookups = rules.Lookups(campaigns=await self.store.campaign_names(wanted))
        items: list[Item] = []
        for event, data in batch:
            for notice in rules.notices(data, lookups):
                if notice.member_ids:
                    items += [
                        (event, notice.message, members[m])
                        for m in notice.member_ids
                        if m in members and m not in notice.exclude
                    ]
                    continue
                if items:
                    await self.fanout.deliver(items)
                    items = []
                with event_context(event.id, event.correlationid):
                    count = await self.fanout.notify(event, notice)
                    log.info("%s → %s for %d member(s)", event.type, notice.message.template, count)
        if items:
            await self.fanout.deliver(items)

    # -- requests -------------------------------------------------------------------------------

    async def inbox(self, member_id: str, limit: int, after: str | None) -> InboxPage:
        docs = await self.store.inbox(member_id, limit, after)
        # The member and everyone the page's texts name: one read by primary key, O(page).
        people = await self.store.names({member_id, *mentioned(docs)})
        return InboxPage(docs, people.get(member_id, ""), people)

    async def preferences(self, member_id: str) -> Preferences:
        """The member's notification preferences (the defaults until they set any)."""
        doc = await _active_member(self.store, member_id)
        return Preferences.stored(doc.get("preferences"))

    async def set_preferences(self, member_id: str, chosen: Preferences) -> Preferences:
        """Replace the member's preferences (validated at the edge: `Preferences`)."""
        await _active_member(self.store, member_id)
        # One whole subdocument: booleans inside stay booleans on nx-27017 too.
        if not await self.store.set_preferences(member_id, chosen.model_dump(mode="json")):
            raise MemberNotFound(member_id)
        return chosen

    async def delivery_log(
        self, filters: Mapping[str, str | None], limit: int, after: str | None
    ) -> list[Doc]:
        """Every delivery on every channel, newest first (filters left None are not applied)."""
        return await self.store.log({k: v for k, v in filters.items() if v}, limit, after)
