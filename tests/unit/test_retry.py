"""The one retry helper (shared/retry.py): what is tried again, how often, and what goes through."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from shared.retry import Backoff, retry

FAST = Backoff(0.001, 0.004)


def failing(times: int, exc: type[Exception] = ConnectionError):
    calls = itertools.count(1)

    async def step() -> int:
        n = next(calls)
        if n <= times:
            raise exc(f"failure {n}")
        return n

    return step


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(0.2, 1.0).delays()
    assert [next(delays) for _ in range(6)] == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


async def test_a_failing_step_is_tried_until_it_succeeds() -> None:
    assert await retry(failing(3), what="step", backoff=FAST) == 4


async def test_the_last_failure_is_raised_when_the_attempts_run_out() -> None:
    with pytest.raises(ConnectionError, match="failure 3"):
        await retry(failing(5), what="step", backoff=FAST, attempts=3)


async def test_a_failure_of_another_kind_goes_through_at_once() -> None:
    step = failing(1, ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        await retry(step, what="step", backoff=FAST, on=(ConnectionError,))
    assert await step() == 2  # it was called once only


async def test_a_deadline_ends_the_retries_with_the_last_failure() -> None:
    with pytest.raises(ConnectionError):
        await retry(failing(10_000), what="step", backoff=FAST, within=0.02)


async def test_setting_stop_ends_the_wait_and_returns_none() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(
        retry(failing(10_000), what="step", backoff=Backoff(30, 30), stop=stop)
    )
    await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(task, 2) is None
