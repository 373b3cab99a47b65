"""The one clock: aware UTC datetimes and the integer epoch milliseconds stored beside them.

Times that a query compares or an update sets are stored as epoch milliseconds (`*_ms`): an
integer compares the same on every server, a datetime does not (docs/patterns.md, "indexed
queries"). A service that needs a clock it can move in tests takes a `Clock` (a function
returning the current time) and defaults to `utcnow`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch_ms(moment: datetime) -> int:
    """A time as integer epoch milliseconds, for fields that are queried or updated by path.

    nx-27017 difference: `$set` (and `$max`/`$min`) of a *date* by a top-level or dotted path
    stores it as a string, so range queries on it miss; inserted dates and dates inside a
    whole subdocument stay dates. Integers order the same on MongoDB and on nx-27017.
    """
    return int(moment.timestamp() * 1000)


def now_ms(clock: Clock = utcnow) -> int:
    return epoch_ms(clock())


def from_ms(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def woken_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass, whichever comes first.

    Not `asyncio.wait_for(event.wait(), ...)`: on Python 3.11 a cancellation that arrives just
    as the event is set is swallowed (wait_for returns the result), so a stopping service would
    wait for ever on a loop that goes on running; `asyncio.wait` always lets it through.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
