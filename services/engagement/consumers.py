"""Engagement event handlers: its own projection of members."""

from __future__ import annotations

from services.engagement.store import EngagementStore
from shared.bus import Consumer
from shared.events import CloudEvent, EventData
from shared.projection import MemberProjection

PROJECTED_FIELDS = ("display_name", "region", "roles", "locale", "timezone")


class EngagementHandlers:
    def __init__(self, store: EngagementStore) -> None:
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="engagement-members",
                stream="MEMBERS",
                subjects=["members.member-joined.*", "members.member-updated.*",
                          "members.member-left.*"],
                handle=self.on_member_event,
            )
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.projection.apply(data)
