"""Activities' event handlers: its projection of the members, and members leaving or erased.

One durable consumer, declared once (`subscriptions`, which the bus, the NATS permissions and
the AsyncAPI document read), its event types given their handler in one line (`on`). A batch
of member events is one ordered bulk write of the projection, then the places given back by
members who left, then the erasures; every effect is idempotent (guarded projection writes,
roster-guarded cancels, erasure that finds nothing left to do), so a redelivered event changes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.activities.usecases import MembersFollower
from shared.events import MemberJoined, MemberLeft, MemberUpdated
from shared.subscriptions import Batch, Subscriptions

subscriptions = Subscriptions("activities")
members = subscriptions.consumer("activities-members", stream="MEMBERS")


class ActivitiesHandlers:
    def __init__(self, members: MembersFollower, clock: Callable[[], datetime]) -> None:
        self.members = members
        self.clock = clock

    # One handler for the three on purpose: the projection of a whole batch in one bulk write.
    @members.on(MemberJoined, MemberUpdated, MemberLeft)
    async def on_members(self, batch: Batch) -> None:
        """The projection (status, display name); who left gives back their places; erasure."""
        await self.members.apply([data for _, data in batch], self.clock())
