"""The probes of every service: liveness (`/healthz`: its event loop runs) and readiness
(`/readyz`: it can do what a client asks of it now).

**Liveness.** A coroutine on the event loop stamps the monotonic clock every second
(`Heartbeat.beat`); `/healthz` answers 503 when the stamp is older than `STALE_SECONDS`. A loop
that is blocked (a synchronous call that does not return, a CPU-bound loop that never awaits)
cannot answer at all: the probe's own timeout ends the request, and that is the failure the
orchestrator counts. So every probe of `/healthz` must have a timeout shorter than the stall it
is meant to catch (3 s in compose and k8s). A watchdog thread, which runs whatever the loop
does, logs a stall while it lasts, with the stack of the loop's thread (where it is stuck), and
logs again when the loop runs again.

**Readiness.** What a request needs: start-up done (storage initialised), MongoDB answering, and
the API keys read from their bucket once (without them only the bootstrap key is known, and
every integration's key would be refused). NATS and the consumers are reported and do not
decide: while NATS is away writes go to the outbox and consumers pause, and both resume by
themselves. The keys are read over NATS, so a service's first start needs NATS once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

log = logging.getLogger("sarafan.liveness")

#: How often the heartbeat stamps the clock (and the watchdog looks at the stamp).
BEAT_SECONDS = 1.0
#: A stamp older than this: `/healthz` is 503 and the watchdog logs a stalled loop.
STALE_SECONDS = 5.0
#: How many of the innermost frames of the stuck loop's stack the watchdog logs.
STACK_FRAMES = 12

#: The readiness checks that decide `/readyz`; the others are reported only.
REQUIRED = ("initialised", "mongodb", "api_keys")


class Liveness(BaseModel):
    """The answer of `/healthz`."""

    status: Literal["ok", "stalled"]
    service: str
    heartbeat_age_seconds: float = Field(
        description="seconds since the event loop last ran the heartbeat (about 1 when alive)"
    )


class Readiness(BaseModel):
    """The answer of `/readyz`: 200 when every required check holds, else 503."""

    status: Literal["ready", "not ready"]
    checks: dict[str, bool] = Field(
        description="initialised, mongodb, api_keys (required); nats, streams_and_consumers "
        "(reported: while NATS is away writes wait in the outbox)"
    )
    required: list[str] = Field(description="the checks that decide the status")


class Heartbeat:
    """The event loop's heartbeat and the thread that watches it (see the module's text)."""

    def __init__(self, service: str, stale_after: float = STALE_SECONDS) -> None:
        self.service = service
        self.stale_after = stale_after
        self.stamp = time.monotonic()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    async def beat(self) -> None:
        """Stamp the clock every BEAT_SECONDS, for ever (a task of the service's runtime)."""
        self._loop_thread = threading.get_ident()
        while True:
            self.stamp = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)

    def age(self) -> float:
        """Seconds since the loop last ran the heartbeat."""
        return time.monotonic() - self.stamp

    def answer(self) -> JSONResponse:
        """`/healthz`: 200 while the heartbeat is fresh, 503 once it is stale."""
        age = self.age()
        alive = age <= self.stale_after
        body = Liveness(
            status="ok" if alive else "stalled",
            service=self.service,
            heartbeat_age_seconds=round(age, 3),
        )
        return JSONResponse(body.model_dump(), status_code=200 if alive else 503)

    def watch(self) -> None:
        """Start the watchdog thread (once)."""
        if self._watchdog is None:
            self._stop.clear()
            self._watchdog = threading.Thread(
                target=self._watch, name=f"{self.service}-watchdog", daemon=True
            )
            self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=2 * BEAT_SECONDS)
            self._watchdog = None

    def _watch(self) -> None:
        stalled_at: float | None = None  # the stamp the loop stopped at
        while not self._stop.wait(BEAT_SECONDS):
            stamp = self.stamp
            if stalled_at is None and time.monotonic() - stamp > self.stale_after:
                stalled_at = stamp
                log.error(
                    "the event loop has not run for %.1f s (liveness fails); it is at:\n%s",
                    time.monotonic() - stamp,
                    self._where(),
                )
            elif stalled_at is not None and stamp != stalled_at:
                log.warning("the event loop runs again after a %.1f s stall", stamp - stalled_at)
                stalled_at = None

    def _where(self) -> str:
        """The innermost frames of the loop thread's stack, innermost last."""
        frame = sys._current_frames().get(self._loop_thread or -1)
        if frame is None:
            return "  (the loop's thread is gone)"
        return "".join(traceback.format_stack(frame, limit=STACK_FRAMES)).rstrip()


def readiness_answer(checks: dict[str, bool]) -> JSONResponse:
    """`/readyz`: 200 when every REQUIRED check holds, 503 otherwise; every check reported."""
    ready = all(checks.get(name, False) for name in REQUIRED)
    body = Readiness(
        status="ready" if ready else "not ready", checks=checks, required=list(REQUIRED)
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
