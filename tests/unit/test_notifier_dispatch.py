"""The dispatcher on in-memory fakes: a claimed batch's outcomes written together, and a send
held by its channel's pace past its claim left to the next claim (never sent twice)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from services.notifier.pacing import Pacing
from shared.events import MemberJoined, new_event
from tests.fakes.notifier import ScriptedChannel, fake_notifier


def joined(member_id: str) -> MemberJoined:
    return MemberJoined.model_validate(
        {**MemberJoined.example, "member_id": member_id, "display_name": member_id,
         "contacts": {"email": f"{member_id}@example.org"}}
    )  # fmt: skip


async def test_a_claimed_batch_s_outcomes_are_written_in_one_bulk_write() -> None:
    email = ScriptedChannel("email")
    f = fake_notifier(email)
    await f.handlers.on_members([(new_event(j), j) for j in map(joined, ["a", "b", "c", "d"])])
    deliveries = f.store.deliveries
    calls: dict[str, int] = {"update_one": 0, "bulk_write": 0}
    for name in calls:
        original = getattr(deliveries, name)

        async def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any):
            calls[_name] += 1
            return await _original(*args, **kw)

        setattr(deliveries, name, counted)
    assert await f.dispatcher.run_once() == 4
    assert len(email.sent) == 4
    # The claim, then the four outcomes together: no round trip per delivery.
    assert calls == {"update_one": 0, "bulk_write": 2}
    found = await deliveries.find({"channel": {"$eq": "email"}}).to_list(None)
    assert {d["status"] for d in found} == {"delivered"}


class SlowPace(Pacing):
    """A channel so busy that a send waits longer than its claim's lease for its turn."""

    def __init__(self, clock: Any, wait: timedelta) -> None:
        super().__init__({})
        self.clock, self.wait = clock, wait

    @asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        self.clock.offset += self.wait
        yield


async def test_a_send_that_waited_past_its_claim_for_its_channel_is_left_to_the_next_claim() -> (
    None
):
    email = ScriptedChannel("email")
    f = fake_notifier(email)
    await f.handlers.on_members([(new_event(joined("a")), joined("a"))])
    f.dispatcher.pacing = SlowPace(f.clock, timedelta(seconds=59))  # the fake's lease: 60 s
    assert await f.dispatcher.run_once() == 1
    assert email.sent == []  # another worker may have claimed it by now: not sent here
    [held] = await f.store.deliveries.find({"channel": {"$eq": "email"}}).to_list(None)
    assert held["status"] == "sending" and held["attempts"] == 0
    f.dispatcher.pacing = Pacing({})
    f.clock.offset += timedelta(seconds=2)  # the lease is over: due again
    assert await f.dispatcher.run_once() == 1
    assert [m.address for m in email.sent] == ["a@example.org"]
