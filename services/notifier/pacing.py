"""Each push channel's pace: how many sends at once and how many a second (its peer's limits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """At most `concurrency` sends at once, and `rate` sends a second (0: no limit)."""

    concurrency: int
    rate: float = 0.0


class Pacer:
    """Holds a send until its channel allows it: a free place among the channel's concurrent
    sends, then the next start the rate allows (starts spaced 1/rate apart, no burst)."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self._places = asyncio.Semaphore(pace.concurrency)
        self._next_start = 0.0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._places:
            if self.pace.rate > 0:
                await self._wait_turn()
            yield

    async def _wait_turn(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            start = max(loop.time(), self._next_start)
            self._next_start = start + 1 / self.pace.rate
        delay = start - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class Pacing:
    """The pacers of the channels that have one; a channel without is not held."""

    def __init__(self, paces: dict[str, Pace]) -> None:
        self.pacers = {name: Pacer(pace) for name, pace in paces.items()}

    @asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        pacer = self.pacers.get(channel)
        if pacer is None:
            yield
            return
        async with pacer.slot():
            yield
