"""Test helpers shared by unit, integration and e2e tests: waiting on conditions, not sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll a sync or async predicate until it returns something truthy and return that.

    Raises AssertionError with `message` (and the last value seen) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            detail = message or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"{detail}: still {value!r} after {timeout}s")
        await asyncio.sleep(interval)
