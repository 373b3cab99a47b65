"""A push channel's pace: no more sends at once than it allows, starts spaced by its rate."""

from __future__ import annotations

import asyncio

from services.notifier.pacing import Pace, Pacing


async def test_a_channel_never_has_more_sends_at_once_than_its_concurrency() -> None:
    pacing = Pacing({"webhook": Pace(concurrency=3)})
    running = most = 0

    async def send() -> None:
        nonlocal running, most
        async with pacing.slot("webhook"):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            running -= 1

    await asyncio.gather(*(send() for _ in range(20)))
    assert most == 3


async def test_starts_are_spaced_by_the_channel_rate() -> None:
    pacing = Pacing({"telegram": Pace(concurrency=50, rate=100)})
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def send() -> None:
        async with pacing.slot("telegram"):
            starts.append(loop.time())

    await asyncio.gather(*(send() for _ in range(11)))
    # A hundred a second: eleven starts take at least a tenth of a second (a sleep never ends
    # early; a late wake-up only lengthens it).
    assert starts[-1] - starts[0] >= 0.1 - 1e-3


async def test_a_channel_without_a_pace_is_not_held() -> None:
    pacing = Pacing({"telegram": Pace(concurrency=1, rate=1)})
    async with pacing.slot("email"), pacing.slot("email"):  # two at once, no waiting
        pass
