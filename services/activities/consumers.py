"""Activities' event handlers: its projection of the members, and members leaving or erased.

One durable consumer, declared on its handler (`subscriptions`, which the bus, the NATS
permissions and the AsyncAPI document read). A batch of member events is one ordered bulk write
of the projection, then the places given back by members who left, then the erasures; every
effect is idempotent (guarded projection writes, roster-guarded cancels, erasure that finds
nothing left to do), so a redelivered event changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.activities.usecases import MembersFollower
from shared.events import MemberJoined, MemberLeft, MemberUpdated
from shared.subscriptions import Batch, Subscriptions

subscriptions = Subscriptions("activities")


class ActivitiesHandlers:
    def __init__(self, members: MembersFollower, clock: Callable[[], datetime]) -> None:
        self.members = members
        self.clock = clock

    @subscriptions.handler(
        "activities-members",
        stream="MEMBERS",
        subjects=[
            "members.member-joined.*",
            "members.member-updated.*",
            "members.member-left.*",
        ],
        types=[MemberJoined, MemberUpdated, MemberLeft],
    )
    async def on_members(self, batch: Batch) -> None:
        """The projection (status, display name); who left gives back their places; erasure."""
        await self.members.apply([data for _, data in batch], self.clock())
