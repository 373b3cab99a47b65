"""Retry with exponential back-off: the one way the project tries a step again.

    await retry(prepare_storage, what="initialise storage")       # until it succeeds
    await retry(step, what="bind", stop=stopping)                  # or until `stop` is set
    names = await retry(kv.keys, what="list keys", attempts=3,
                        on=(TimeoutError, nats.errors.Error))      # then raise the last error

A failure of a kind in `on` waits `Backoff`'s next delay (doubling from `first` up to `cap`)
and tries again; any other exception goes through at once, and so does cancellation. With
`attempts` or `within` the last failure is raised when they run out; with `stop` the wait is
cut short when it is set and `retry` returns None without trying again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from shared.clock import woken_or_timeout

log = logging.getLogger("sarafan.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays that double from `first` up to `cap` seconds."""

    first: float = 0.2
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.cap)


async def retry(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff = Backoff(),
    on: tuple[type[BaseException], ...] = (Exception,),
    attempts: int | None = None,
    within: float | None = None,
    stop: asyncio.Event | None = None,
    level: int = logging.WARNING,
) -> T | None:
    """`step()`'s result, tried again after each failure of a kind in `on` (see the module)."""
    deadline = None if within is None else time.monotonic() + within
    delays = backoff.delays()
    tried = 0
    while stop is None or not stop.is_set():
        tried += 1
        try:
            return await step()
        except on as exc:
            if (attempts is not None and tried >= attempts) or (
                deadline is not None and time.monotonic() > deadline
            ):
                raise
            delay = next(delays)
            log.log(level, "%s failed: %r; again in %.1fs", what, exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await woken_or_timeout(stop, delay)
    return None
