"""Campaigns event handlers: its own projection of members."""

from __future__ import annotations

from services.campaigns.store import CampaignsStore
from shared.bus import Consumer
from shared.events import CloudEvent, EventData
from shared.projection import MemberProjection

PROJECTED_FIELDS = ("display_name", "region", "roles", "locale", "timezone")


class CampaignsHandlers:
    def __init__(self, store: CampaignsStore) -> None:
        self.projection = MemberProjection(store.members, PROJECTED_FIELDS)

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(
                name="campaigns-members",
                stream="MEMBERS",
                subjects=["members.member-joined.*", "members.member-updated.*",
                          "members.member-left.*"],
                handle=self.on_member_event,
            )
        ]

    async def on_member_event(self, event: CloudEvent, data: EventData) -> None:
        await self.projection.apply(data)
