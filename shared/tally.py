"""Counters kept exactly once without a count: deterministic delta documents plus a checkpoint.

A community-wide figure such as "members now" must not be counted over all members on each
request, and a plain `$inc` on a counter document is doubled by a redelivered event. Here each
counted transition of an aggregate (member m joined, left, was erased) inserts one delta
document whose `_id` names the transition: inserting it twice is a duplicate key, so it counts
once whatever is redelivered (docs/patterns.md, idempotent effects). Insert the delta *before*
the state change it stands for, computed from the state before it: a crash between the two
leaves the state unchanged, the retry computes the same delta, and the duplicate is ignored.

Reading sums the checkpoint and the deltas after it (an indexed range, summed by the server).
`fold` moves deltas older than a margin into the checkpoint with one guarded update, so a read
sums a day's deltas at most; folded deltas are deleted one fold later, so that a read that
fetched the previous checkpoint still finds every delta it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.query import where
from shared.store import epoch_ms, is_duplicate_key, only_duplicates

Doc = dict[str, Any]
#: Deltas this recent stay unfolded: a writer that computed `at_ms` just before a fold may
#: insert after it, and must still land after the checkpoint.
FOLD_MARGIN = timedelta(minutes=10)


class Tally:
    """Named counters (`fields`) in one collection: `<name>:checkpoint` plus delta documents."""

    def __init__(
        self, collection: AsyncCollection[Doc], name: str, fields: tuple[str, ...]
    ) -> None:
        self.collection = collection
        self.name = name
        self.fields = fields
        self.checkpoint_id = f"{name}:checkpoint"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("tally", 1), ("at_ms", 1)])

    def delta(self, key: str, counts: Mapping[str, float], at: datetime) -> Doc | None:
        """The delta document of one transition (None when it changes nothing)."""
        unknown = set(counts) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.name} counts only {self.fields}, not {sorted(unknown)}")
        changes = {k: v for k, v in counts.items() if v}
        if not changes:
            return None
        return {
            "_id": f"{self.name}:{key}",
            "tally": self.name,
            "at_ms": epoch_ms(at),
            "d": changes,
        }

    async def add(self, deltas: list[Doc | None]) -> None:
        """Record transitions (one unordered insert); one already recorded is skipped."""
        docs = [d for d in deltas if d is not None]
        if not docs:
            return
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise

    async def totals(self) -> dict[str, float]:
        checkpoint = await self.collection.find_one({"_id": self.checkpoint_id}) or {}
        result = {f: float((checkpoint.get("totals") or {}).get(f, 0)) for f in self.fields}
        since = int(checkpoint.get("through_ms") or 0)
        for field, value in (await self._sums(since, None)).items():
            result[field] = result.get(field, 0.0) + value
        return result

    async def _sums(self, after_ms: int, through_ms: int | None) -> dict[str, float]:
        window: Doc = {"$gt": after_ms}
        if through_ms is not None:
            window["$lte"] = through_ms
        fields = self.fields
        pipeline: list[Doc] = [
            {"$match": where(tally=self.name, at_ms=window)},
            {"$group": {"_id": None, **{f: {"$sum": f"$d.{f}"} for f in fields}}},
        ]
        rows = await (await self.collection.aggregate(pipeline)).to_list(1)
        return {f: float(rows[0].get(f) or 0) for f in fields} if rows else {}

    async def fold(self, now: datetime) -> bool:
        """Move deltas older than the margin into the checkpoint (one replica at a time
        wins the guarded update); True when a fold happened."""
        checkpoint = await self.collection.find_one({"_id": self.checkpoint_id}) or {}
        previous = int(checkpoint.get("through_ms") or 0)
        through = epoch_ms(now - FOLD_MARGIN)
        if through <= previous:
            return False
        totals = {k: float(v) for k, v in (checkpoint.get("totals") or {}).items()}
        for field, value in (await self._sums(previous, through)).items():
            totals[field] = totals.get(field, 0.0) + value
        update = {"$set": {"through_ms": through, "totals": totals, "before_ms": previous}}
        if checkpoint:
            result = await self.collection.update_one(
                {"_id": self.checkpoint_id, "through_ms": {"$eq": previous}}, update
            )
            if result.modified_count != 1:
                return False
        else:
            try:
                await self.collection.insert_one({"_id": self.checkpoint_id, **update["$set"]})
            except Exception as exc:
                if is_duplicate_key(exc):
                    return False
                raise
        # Deltas the previous checkpoint already held: no read can need them any more.
        before = int(checkpoint.get("before_ms") or 0)
        if before:
            await self.collection.delete_many(where(tally=self.name, at_ms={"$lte": before}))
        return True
