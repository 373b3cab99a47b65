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
sums a few minutes of deltas at most. Folded deltas are deleted once a read can no longer need
them (one fold later) and they are older than RETAIN, so that the same transition recorded again
within that time (a redelivery, a retry) still meets its first delta and counts once.

A figure over a moving window ("posts of the last 7 days") is a tally too: a delta may say when
the counted thing happened (`happened_ms`), and the checkpoint keeps, beside the totals, the sum
of such deltas per hour they happened in, for `keep` back. `windows` sums the whole hours from
a moment on; the part hour before the first whole one (at most an hour of the community's
activity) is the caller's to count from its own indexed documents, so the window is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.documents import Doc
from shared.query import where
from shared.store import epoch_ms, is_duplicate_key, only_duplicates

#: Deltas this recent stay unfolded: a writer that computed `at_ms` just before a fold may
#: insert after it, and must still land after the checkpoint. Writers stamp `at_ms` right
#: before their insert, so this covers a very slow insert; every read sums the deltas this
#: recent (and those since the last fold), so it is also what a read costs at most.
FOLD_MARGIN = timedelta(minutes=3)
#: Folded deltas are kept this long, so that a transition recorded again meets its first delta
#: (longer than a member's applied facts are kept, and than any redelivery).
RETAIN = timedelta(days=8)
HOUR_MS = 3_600_000


def first_whole_hour(ms: int) -> int:
    """The first hour boundary at or after `ms` (epoch ms)."""
    return -(-int(ms) // HOUR_MS) * HOUR_MS


class Tally:
    """Named counters (`fields`) in one collection: `<name>:checkpoint` plus delta documents."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        name: str,
        fields: tuple[str, ...],
        keep: timedelta = timedelta(0),
    ) -> None:
        self.collection = collection
        self.name = name
        self.fields = fields
        self.checkpoint_id = f"{name}:checkpoint"
        #: How far back the per-hour sums are kept (the longest window read, and an hour).
        self.keep_ms = int((keep + timedelta(hours=1)).total_seconds() * 1000) if keep else 0

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("tally", 1), ("at_ms", 1)])

    def delta(
        self,
        key: str,
        counts: Mapping[str, float],
        at: datetime,
        happened_ms: int | None = None,
    ) -> Doc | None:
        """The delta document of one transition (None when it changes nothing), recorded at
        `at`; with `happened_ms`, also counted in the hour the counted thing happened."""
        unknown = set(counts) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.name} counts only {self.fields}, not {sorted(unknown)}")
        changes = {k: v for k, v in counts.items() if v}
        if not changes:
            return None
        doc: Doc = {
            "_id": f"{self.name}:{key}",
            "tally": self.name,
            "at_ms": epoch_ms(at),
            "d": changes,
        }
        if happened_ms is not None:
            doc["h"] = int(happened_ms) // HOUR_MS
        return doc

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
        return (await self.read([]))[0]

    async def windows(self, starts_ms: list[int]) -> list[dict[str, float]]:
        """For each start, the sums over the whole hours from it on (`first_whole_hour`)."""
        return (await self.read(starts_ms))[1]

    async def read(self, starts_ms: list[int]) -> tuple[dict[str, float], list[dict[str, float]]]:
        """The totals, and for each start the sums over the whole hours from it on: the
        checkpoint and the deltas recorded after it, summed by the server in one pass."""
        checkpoint = await self.collection.find_one({"_id": self.checkpoint_id}) or {}
        totals = {f: float((checkpoint.get("totals") or {}).get(f, 0)) for f in self.fields}
        hours = {int(h): counts for h, counts in (checkpoint.get("hours") or {}).items()}
        since = int(checkpoint.get("through_ms") or 0)
        for hour, counts in (await self._grouped(since, None)).items():
            merged = {} if hour is None else hours.setdefault(hour, {})
            for field, value in counts.items():
                totals[field] = totals.get(field, 0.0) + value
                merged[field] = float(merged.get(field, 0)) + value
        result = []
        for start in starts_ms:
            first = first_whole_hour(start) // HOUR_MS
            sums = dict.fromkeys(self.fields, 0.0)
            for hour, counts in hours.items():
                if hour >= first:
                    for field, value in counts.items():
                        sums[field] = sums.get(field, 0.0) + float(value or 0)
            result.append(sums)
        return totals, result

    def _window(self, after_ms: int, through_ms: int | None) -> Doc:
        window: Doc = {"$gt": after_ms}
        if through_ms is not None:
            window["$lte"] = through_ms
        return where(tally=self.name, at_ms=window)

    async def _grouped(
        self, after_ms: int, through_ms: int | None
    ) -> dict[int | None, dict[str, float]]:
        """The deltas recorded in the range, summed per hour they happened in (None: those
        that do not say)."""
        pipeline: list[Doc] = [
            {"$match": self._window(after_ms, through_ms)},
            {"$group": {"_id": "$h", **{f: {"$sum": f"$d.{f}"} for f in self.fields}}},
        ]
        rows = await (await self.collection.aggregate(pipeline)).to_list(None)
        grouped: dict[int | None, dict[str, float]] = {}
        for row in rows:
            hour = row.get("_id")
            key = int(hour) if isinstance(hour, (int, float)) else None
            sums = grouped.setdefault(key, {})
            for f in self.fields:
                if row.get(f):
                    sums[f] = sums.get(f, 0.0) + float(row[f])
        return grouped

    async def fold(self, now: datetime) -> bool:
        """Move deltas older than the margin into the checkpoint (one replica at a time
        wins the guarded update); True when a fold happened."""
        checkpoint = await self.collection.find_one({"_id": self.checkpoint_id}) or {}
        previous = int(checkpoint.get("through_ms") or 0)
        through = epoch_ms(now - FOLD_MARGIN)
        if through <= previous:
            return False
        totals = {k: float(v) for k, v in (checkpoint.get("totals") or {}).items()}
        grouped = await self._grouped(previous, through)
        for counts in grouped.values():
            for field, value in counts.items():
                totals[field] = totals.get(field, 0.0) + value
        update: Doc = {"$set": {"through_ms": through, "totals": totals, "before_ms": previous}}
        if self.keep_ms:
            update["$set"]["hours"] = self._folded_hours(checkpoint, grouped, now)
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
        # Deltas the previous checkpoint already held (no read can need them any more) and old
        # enough that nothing will record their transition again.
        before = min(int(checkpoint.get("before_ms") or 0), epoch_ms(now - RETAIN))
        if before > 0:
            await self.collection.delete_many(where(tally=self.name, at_ms={"$lte": before}))
        return True

    def _folded_hours(
        self, checkpoint: Doc, grouped: dict[int | None, dict[str, float]], now: datetime
    ) -> dict[str, dict[str, float]]:
        """The checkpoint's per-hour sums with the deltas folded now, without hours older than
        `keep` (no window reads them)."""
        oldest = (epoch_ms(now) - self.keep_ms) // HOUR_MS
        hours = {
            int(h): {k: float(v) for k, v in counts.items()}
            for h, counts in (checkpoint.get("hours") or {}).items()
            if int(h) >= oldest
        }
        for hour, counts in grouped.items():
            if hour is None or hour < oldest:
                continue
            merged = hours.setdefault(hour, {})
            for field, value in counts.items():
                merged[field] = merged.get(field, 0.0) + value
        return {str(h): counts for h, counts in sorted(hours.items())}
