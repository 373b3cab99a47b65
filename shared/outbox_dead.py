"""Outbox entries that can never be published: counted per event, set aside, alerted."""

from __future__ import annotations

import logging
from typing import Any

import nats.errors

from shared.clock import epoch_ms, utcnow
from shared.events import CloudEvent
from shared.metrics import Metrics

log = logging.getLogger("sarafan.outbox")

#: Publishing an event fails for good, not for a while, with these (NATS refusing its size, an
#: entry that is no event any more): after OUTBOX_ATTEMPTS such failures the entry is moved
#: to `outbox_dead` in its document, so it stops blocking the events after it, and counted
#: (`sarafan_outbox_dead_total`, an alert). Any other failure is retried for ever.
PERMANENT_FAILURES: tuple[type[BaseException], ...] = (
    nats.errors.MaxPayloadError,
    ValueError,
    TypeError,
)
OUTBOX_ATTEMPTS = 3


class Unpublishable:
    """The relay's count of each event's permanent failures, and what it keeps of one it gives
    up on (in the plain form and in the batch form alike)."""

    def __init__(self, service: str, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics
        self.failures: dict[str, int] = {}

    def gives_up(self, event_id: str, exc: BaseException) -> bool:
        """Count a publish that failed for good; True at the last attempt (the caller sets the
        entry aside, so it stops blocking the events after it)."""
        if not isinstance(exc, PERMANENT_FAILURES):
            return False
        self.failures[event_id] = self.failures.get(event_id, 0) + 1
        if self.failures[event_id] < OUTBOX_ATTEMPTS:
            return False
        self.failures.pop(event_id, None)
        return True

    def condemn(self, event_id: str) -> None:
        """An entry that is no event at all: its next failure is its last."""
        self.failures[event_id] = OUTBOX_ATTEMPTS

    @staticmethod
    def entry(event: Any, exc: BaseException) -> dict[str, Any]:
        """What `outbox_dead.<event id>` keeps: the event as stored, the error, when."""
        raw = event.model_dump(mode="json") if isinstance(event, CloudEvent) else event
        return {
            "event": raw,
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "at_ms": epoch_ms(utcnow()),
        }

    def count(self, collection: str, doc_id: Any, dead: dict[str, Any]) -> None:
        for event_id, entry in dead.items():
            self.metrics.outbox_dead.labels(self.service).inc()
            log.error(
                "outbox entry %s of %s/%s can never be published (%s): moved to outbox_dead",
                event_id,
                collection,
                doc_id,
                entry["error"],
            )
