"""Transactional outbox: events ride in the changed document until JetStream acknowledges them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared.bus import Bus
from shared.events import CloudEvent
from shared.logs import event_context
from shared.metrics import Metrics

log = logging.getLogger("sarafan.outbox")

Collection = AsyncCollection[dict[str, Any]]


def staged(events: Iterable[CloudEvent]) -> dict[str, Any]:
    """Fields to `$set` (or insert) so the events leave with the state change, atomically.

    Pending events are a subdocument keyed by event id plus a counter, not an array of
    subdocuments: nx-27017 mangles arrays of subdocuments on update, and keyed entries let
    the relay remove exactly the acknowledged one.
    """
    return {f"outbox.{e.id}": e.model_dump(mode="json") for e in events}


def with_outbox(document: dict[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    """A new document carrying its first events (for inserts)."""
    return {
        **document,
        "outbox": {e.id: e.model_dump(mode="json") for e in events},
        "outbox_pending": len(events),
    }


def update_with_outbox(update: dict[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    """Add the events to a MongoDB update document (`$set` plus the pending counter)."""
    merged = {k: dict(v) for k, v in update.items()}
    merged.setdefault("$set", {}).update(staged(events))
    merged.setdefault("$inc", {})["outbox_pending"] = merged.get("$inc", {}).get(
        "outbox_pending", 0
    ) + len(events)
    return merged


class Relay:
    """Publishes outbox entries right after each write, and sweeps for what a crash left."""

    def __init__(
        self,
        bus: Bus,
        collections: list[Collection],
        metrics: Metrics,
        sweep_seconds: float = 5.0,
    ) -> None:
        self.bus = bus
        self.collections = {c.name: c for c in collections}
        self.metrics = metrics
        self.sweep_seconds = sweep_seconds
        self._in_flight: set[tuple[str, Any]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.paused = False  # tests pause the relay to simulate a crash between write and publish

    async def start(self) -> None:
        for coll in self.collections.values():
            await coll.create_index("outbox_pending", sparse=True)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweeper")
        self.bus.on_connected.append(self.wake)

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for t in [*self._tasks, self._sweeper]:
            if t is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 5)

    async def wake(self) -> None:
        self._wake.set()

    def kick(self, collection: Collection, doc_id: Any) -> None:
        """Publish what this document holds now: called right after the write (no polling)."""
        if self.paused:
            return
        task = asyncio.create_task(self.flush(collection.name, doc_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, collection_name: str, doc_id: Any) -> int:
        """Publish every pending event of one document, oldest first; returns how many went."""
        key = (collection_name, doc_id)
        if key in self._in_flight or not self.bus.connected:
            return 0
        self._in_flight.add(key)
        coll = self.collections[collection_name]
        sent = 0
        try:
            doc = await coll.find_one({"_id": doc_id}, {"outbox": 1})
            entries = list(((doc or {}).get("outbox") or {}).values())
            entries.sort(key=lambda e: e["time"])
            for raw in entries:
                event = CloudEvent.model_validate(raw)
                with event_context(event.id, event.correlationid):
                    try:
                        await self.bus.publish(event)
                    except Exception as exc:
                        # Not acknowledged = maybe not stored: keep it; the same id is retried
                        # later and the duplicate window drops a copy that did get stored.
                        log.warning(
                            "outbox publish of %s failed: %r; kept for retry", event.type, exc
                        )
                        break
                    # Guarded so two relays (or replicas) never decrement twice.
                    await coll.update_one(
                        {"_id": doc_id, f"outbox.{event.id}": {"$exists": True}},
                        {"$unset": {f"outbox.{event.id}": ""}, "$inc": {"outbox_pending": -1}},
                    )
                    sent += 1
        except Exception:
            log.exception("outbox flush of %s/%s failed", collection_name, doc_id)
        finally:
            self._in_flight.discard(key)
        return sent

    async def sweep(self) -> int:
        """Publish everything still pending in any collection; returns how many went."""
        sent = 0
        pending_total = 0
        for name, coll in self.collections.items():
            async for doc in coll.find(
                {"outbox_pending": {"$gt": 0}}, {"_id": 1, "outbox_pending": 1}
            ):
                pending_total += int(doc.get("outbox_pending") or 0)
                if not self.paused:
                    sent += await self.flush(name, doc["_id"])
        self.metrics.outbox_pending.labels(self.bus.service).set(max(pending_total - sent, 0))
        return sent

    async def _sweep_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_seconds)
            self._wake.clear()
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox sweep failed: %r", exc)
