"""What a document with an outbox looks like: the fields the kernel adds, and the helpers that
read or write them (the one module that knows the layout; docs/patterns.md, section 1).

A write with events goes through the unit of work (shared/uow.py), which uses the writers
below; services use the readers: `without_outbox` to hide the fields, and the few helpers an
erasure or a document read whole needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.events import CloudEvent
from shared.outbox_batch import BATCH_FIELD
from shared.outbox_port import Collection

OUTBOX_FIELDS = ("outbox", "outbox_pending", "outbox_dead", BATCH_FIELD)


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


def without_outbox(*also: str) -> dict[str, int]:
    """A projection leaving out the outbox (and the other fields named)."""
    return dict.fromkeys((*OUTBOX_FIELDS, *also), 0)


def with_events(document: Mapping[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    return with_outbox(dict(document), events) if events else dict(document)


def update_with_events(update: Mapping[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    return update_with_outbox(dict(update), events) if events else dict(update)


# -- erasure: what an outbox may still hold about a forgotten person -----------------------------

#: `$unset` of the events set aside as unpublishable (with their error strings): erasure adds it
#: to the update that forgets a document's personal fields.
FORGET_DEAD_EVENTS: dict[str, str] = {"outbox_dead": ""}


async def drop_pending(coll: Collection, doc_ids: list[Any], event_type: str) -> None:
    """Drop the pending, unpublished events of `event_type` in these documents (their data
    would reach the stream after an erasure purged it). Each removal is guarded like the
    relay's own, so the pending counter drops once per entry."""
    if not doc_ids:
        return
    async for doc in coll.find({"_id": {"$in": list(doc_ids)}}, {"outbox": 1}):
        for event_id, entry in (doc.get("outbox") or {}).items():
            if not isinstance(entry, dict) or entry.get("type") != event_type:
                continue
            await coll.update_one(
                {"_id": doc["_id"], f"outbox.{event_id}": {"$exists": True}},
                {"$unset": {f"outbox.{event_id}": ""}, "$inc": {"outbox_pending": -1}},
            )


# -- documents read whole (erasure's tombstone swap, the import's prepared documents) ------------


def pending_events(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events a document read whole still holds unpublished, as stored (JSON)."""
    return list((document.get("outbox") or {}).values())


def carrying(
    document: Mapping[str, Any], events: Iterable[CloudEvent | Mapping[str, Any]]
) -> dict[str, Any]:
    """`document` holding exactly these events as pending, in the form a write stores them
    (for a document built before a bulk write, or a replacement that keeps some events)."""
    entries: dict[str, dict[str, Any]] = {}
    for event in events:
        stored = event.model_dump(mode="json") if isinstance(event, CloudEvent) else dict(event)
        entries[stored["id"]] = stored
    return {**document, "outbox": entries, "outbox_pending": len(entries)}


def unchanged_pending(document: Mapping[str, Any]) -> dict[str, Any]:
    """A write guard for replacing a document read whole: its pending events are still the
    ones read (the relay removes a published event without bumping the document's version)."""
    count = document.get("outbox_pending")
    return {"outbox_pending": count if count is not None else {"$exists": False}}


def has_pending() -> dict[str, Any]:
    """A filter: documents with an event not yet published (served by the relay's index)."""
    return {"outbox_pending": {"$gt": 0}}


def pending_only() -> dict[str, int]:
    """A projection: a document's pending events alone."""
    return {"outbox": 1}
