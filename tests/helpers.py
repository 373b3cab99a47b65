"""Test helpers shared by unit, integration and e2e tests: waiting on conditions, not sleeps."""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


def strong_token() -> str:
    """A bootstrap API token the services accept: random and 43 characters long (a short or
    example one is refused at start-up, shared/weak_secrets.py)."""
    return secrets.token_urlsafe(32)


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


class StoppedRelay:
    """An outbox relay that publishes nothing while in effect: the process "died" between a
    write and its publish (or NATS is slow). Tests use it instead of a switch in production
    code; `resume()` (or leaving the `with` block) gives the relay back its own methods."""

    #: A commit's one entry point, a flush's second round for what was written meanwhile, and
    #: the sweep.
    _HELD = ("committed", "_kick", "_sweep_batch")

    def __init__(self, relay) -> None:
        self.relay = relay
        for name in self._HELD:
            original = getattr(type(relay), name)
            if inspect.iscoroutinefunction(original):
                setattr(relay, name, _nothing_async)
            else:
                setattr(relay, name, _nothing)
        # The outbox's batch form (shared/outbox_batch.py) is swept by a part of its own.
        relay.batches.sweep = _no_batches

    def resume(self) -> None:
        for name in self._HELD:
            self.relay.__dict__.pop(name, None)
        self.relay.batches.__dict__.pop("sweep", None)

    def __enter__(self) -> StoppedRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume()


def _nothing(*args: object, **kwargs: object) -> None:
    return None


async def _nothing_async(*args: object, **kwargs: object) -> int:
    return 0


async def _no_batches(*args: object, **kwargs: object) -> tuple[int, int]:
    return 0, 0


class MovableClock:
    """A service's one clock as a test moves it (`build(settings, clock=...)`): real time moved
    by `offset`, or held `at` one moment; `reset` gives it back real time."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.held: datetime | None = None

    def __call__(self) -> datetime:
        return self.held if self.held is not None else datetime.now(UTC) + self.offset

    def at(self, moment: datetime) -> None:
        self.held = moment

    def reset(self) -> None:
        self.offset, self.held = timedelta(0), None
