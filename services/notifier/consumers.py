"""Notifier event handlers: keep the members projection, turn events into deliveries."""

from __future__ import annotations

import logging
from typing import Any

from services.notifier import domain
from services.notifier.store import NotifierStore
from shared.bus import Consumer
from shared.events import (
    CloudEvent,
    EventData,
    MemberJoined,
    MemberLeft,
    NotificationSent,
    new_event,
    utcnow,
)
from shared.outbox import Relay, with_outbox
from shared.projection import MemberProjection

log = logging.getLogger("sarafan.notifier")

PROJECTED_FIELDS = ("display_name", "region", "roles", "locale", "timezone", "contacts", "consent")


class NotifierHandlers:
    def __init__(self, store: NotifierStore, relay: Relay) -> None:
        self.store = store
        self.relay = relay
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="notifier-members",
                stream="MEMBERS",
                subjects=["members.>"],
                handle=self.on_member_event,
            )
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.projection.apply(data)
        if isinstance(data, MemberJoined):
            await self.deliver_inapp(event, [domain.welcome(data.member_id, data.display_name)])
        elif isinstance(data, MemberLeft) and data.erase:
            await self.store.erase_member(data.member_id)

    async def deliver_inapp(self, cause: CloudEvent, messages: list[domain.Message]) -> None:
        """Store in-app messages (one per member and cause), each announcing itself by event."""
        docs: list[dict[str, Any]] = []
        now = utcnow()
        for message in messages:
            member = await self.store.member(message.member_id)
            locale = (member or {}).get("locale", "ru")
            title, body = domain.render(message.template, locale, message.context)
            nid = domain.delivery_id(cause.id, message.member_id, "inapp")
            sent = new_event(
                NotificationSent(notification_id=nid, member_id=message.member_id, channel="inapp",
                                 template=message.template, cause_event_id=cause.id),
                correlation_id=cause.correlationid,
            )
            docs.append(with_outbox({
                "_id": nid, "member_id": message.member_id, "channel": "inapp",
                "template": message.template, "category": message.category, "locale": locale,
                "title": title, "body": body, "status": "delivered", "attempts": 1,
                "cause_event_id": cause.id, "cause_type": cause.type,
                "created_at": now, "delivered_at": now, "read": False,
            }, [sent]))
        inserted = await self.store.insert_deliveries(docs)
        log.info("stored %d in-app message(s) for %s (%d new)", len(docs), cause.type, inserted)
        for doc in docs:
            self.relay.kick(self.store.deliveries, doc["_id"])
