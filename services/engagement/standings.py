"""The reads behind leaderboards, segments and community health, each served by an index.

No read here goes over all members: a leaderboard page follows a rank key, a segment page is
sorted by the server among the members of one level (or the month's newcomers), and each
figure of /v1/stats is a kept counter or a count bounded by its window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.engagement.store import HIDE, Doc, EngagementStore
from shared.query import count, where

#: Members are grouped by the week they joined in (`cohort`), so that the newcomers of a window
#: are a few index ranges already in score order, not every newcomer sorted on each read.
WEEK_MS = 7 * 86_400_000


def cohort(joined_ms: int) -> int:
    return int(joined_ms) // WEEK_MS


#: Sort of a segment page: decayed score first (lscore orders it at any time), then the id.
BY_SCORE = [("lscore", -1), ("_id", 1)]


class Standings:
    def __init__(self, store: EngagementStore) -> None:
        self.store = store
        self.standing = store.standing

    async def ranked(self, rank: str, region: str | None, after: str, limit: int) -> list[Doc]:
        """Standings in the order of `rank` (a leaderboard key), from after `after`."""
        query: Doc = {rank: {"$gt": after}}
        if region:
            query["region"] = region
        found = self.standing.find(where(query), HIDE).sort(rank, 1).limit(limit)
        return await found.to_list(None)

    async def at_levels(
        self, levels: Iterable[str], wanted: int, last_before_ms: int | None = None
    ) -> list[Doc]:
        """Active members at these levels, highest decayed score first (optionally only those
        whose last participation is at or before `last_before_ms`: the drifting)."""
        queries = []
        for level in levels:
            query: Doc = {"level": level, "active": 1}
            if last_before_ms is not None:
                query["last_ms"] = {"$lte": last_before_ms}
            queries.append(where(query))
        return await self._merged(queries, BY_SCORE, _by_score, wanted)

    async def joined_since(self, since_ms: int, now_ms: int, wanted: int) -> list[Doc]:
        """Active members who joined since `since_ms`, best score first, then the newest: the
        weekly cohorts of the window (each in index order), merged."""
        queries = [
            where(cohort=week, joined_ms={"$gte": since_ms}, active=1)
            for week in range(cohort(since_ms), cohort(now_ms) + 1)
        ]
        order = [("lscore", -1), ("joined_ms", -1), ("_id", 1)]
        return await self._merged(queries, order, _newest_best, wanted)

    async def _merged(
        self, queries: list[Doc], order: list[tuple[str, int]], key: Any, wanted: int
    ) -> list[Doc]:
        """The first `wanted` of several sorted queries, reading each a little at a time: a
        query is read further only when its last row read is among the best so far, so the
        page costs about `wanted` documents, not `wanted` per query."""
        chunk = max(8, wanted // max(len(queries), 1) + 1)
        read: list[list[Doc]] = [[] for _ in queries]
        more = [True] * len(queries)
        while True:
            for i, query in enumerate(queries):
                if more[i] and (not read[i] or _needs_more(read, i, key, wanted)):
                    found = self.standing.find(query, HIDE).sort(order)
                    page = await found.skip(len(read[i])).limit(chunk).to_list(None)
                    read[i] += page
                    more[i] = len(page) == chunk
            if not any(more[i] and _needs_more(read, i, key, wanted) for i in range(len(queries))):
                break
        merged = sorted((d for docs in read for d in docs), key=key)
        return merged[:wanted]

    # -- counts bounded by what they count ---------------------------------------------------------

    async def count_at_level(self, level: str, last_before_ms: int | None = None) -> int:
        query: dict[str, Any] = {"level": level, "active": 1}
        if last_before_ms is not None:
            query["last_ms"] = {"$lte": last_before_ms}
        return await count(self.standing, query)

    async def count_active_since(self, since_ms: int) -> int:
        return await count(self.standing, {"last_ms": {"$gte": since_ms}})


def _lscore(doc: Doc) -> float:
    # A damaged value sorts last rather than failing the whole page (the row is left out
    # when it is rendered, if it cannot be).
    try:
        value = float(doc["lscore"])
    except (KeyError, TypeError, ValueError):
        return float("-inf")
    return value if value == value else float("-inf")  # NaN sorts last too


def _joined(doc: Doc) -> int:
    try:
        return int(doc.get("joined_ms") or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _by_score(doc: Doc) -> tuple[float, str]:
    return (-_lscore(doc), str(doc["_id"]))


def _newest_best(doc: Doc) -> tuple[float, int, str]:
    return (-_lscore(doc), -_joined(doc), str(doc["_id"]))


def _needs_more(read: list[list[Doc]], i: int, key: Any, wanted: int) -> bool:
    """Whether query i's next rows could still belong to the first `wanted`: its last row read
    sorts among the first `wanted` of everything read so far (or fewer have been read)."""
    if not read[i]:
        return True
    everything = sorted(key(d) for docs in read for d in docs)
    return len(everything) < wanted or key(read[i][-1]) <= everything[wanted - 1]
