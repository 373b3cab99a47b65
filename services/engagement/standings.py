"""The reads behind leaderboards, segments and community health, each served by an index.

No read here goes over all members: a leaderboard page follows a rank key, a segment page
follows the segment's own rank key (ranking.py), and each figure of /v1/stats is a kept counter
or a count bounded by its window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.engagement import domain, ranking
from services.engagement.ranking import KEYS_VERSION, KEYS_VERSION_FIELD
from services.engagement.store import HIDE, EngagementStore
from shared.documents import Doc
from shared.query import count, where
from shared.uow import Write

log = logging.getLogger("sarafan.engagement")

#: The week a member joined in (`cohort`, kept on the standing beside `joined_ms`).
WEEK_MS = 7 * 86_400_000


def cohort(joined_ms: int) -> int:
    return int(joined_ms) // WEEK_MS


#: What a standing's segment keys are computed from (ranking.segment_keys).
KEY_SOURCES = {f: 1 for f in ("active", "level", "lscore", "last_ms", "joined_ms", "version")}
#: What a ranked row needs of a standing: not the outbox, nor the ids of the facts applied
#: (a week of them: the bulk of a busy member's document).
RANKED = {**HIDE, "applied": 0, "once": 0}
#: Standings keyed per round of `Insights.key_unkeyed`.
KEYING_BATCH = 500


class Standings:
    def __init__(self, store: EngagementStore, rules: domain.Rules) -> None:
        self.store = store
        self.rules = rules
        self.standing = store.standing

    async def ranked(self, rank: str, region: str | None, after: str, limit: int) -> list[Doc]:
        """Standings in the order of `rank` (a leaderboard key), from after `after`."""
        query: Doc = {rank: {"$gt": after}}
        if region:
            query["region"] = region
        found = self.standing.find(where(query), RANKED).sort(rank, 1).limit(limit)
        return await found.to_list(None)

    async def segment(
        self, key: str, keep: Callable[[Doc], bool], offset: int, wanted: int
    ) -> list[Doc]:
        """Members of a segment in the order of its rank key (ranking.py), the `wanted` after
        the first `offset`: ranges of one index read in order, stopping once the page is full.

        `keep` leaves out a member whose key is stale (their window closed and the write that
        removes the key has not run yet): the only rows read beyond the page.
        """
        found: list[Doc] = []
        after, size = "", offset + wanted
        while len(found) < size:
            query = where({key: {"$gt": after}})
            docs = await self.standing.find(query, RANKED).sort(key, 1).limit(size).to_list(None)
            found += [d for d in docs if keep(d)]
            if len(docs) < size:
                break
            after = docs[-1][key]
        return found[offset:size]

    async def unkeyed(self) -> list[Doc]:
        """Standings written without their segment keys (before the keys existed, by an older
        replica during an upgrade, or by hand), up to `KEYING_BATCH`: an indexed
        `$exists: false` on `keys_v` (and `erased`: a tombstone has no keys). Once every
        standing has them this finds nothing."""
        query = where({KEYS_VERSION_FIELD: {"$exists": False}, "erased": {"$exists": False}})
        return await self.standing.find(query, KEY_SOURCES).limit(KEYING_BATCH).to_list(None)

    def keys(self, docs: list[Doc], now: datetime) -> list[Write]:
        """The writes of the segment keys of these standings (as `unkeyed` read them), each
        only on the standing as read: staged by `uow.standings.key` (repositories.py)."""
        return [self._keying(doc, now) for doc in docs]

    def _keying(self, doc: Doc, now: datetime) -> Write:
        member_id = doc["_id"]
        update: Doc = {"$set": {KEYS_VERSION_FIELD: KEYS_VERSION}}
        try:
            keys, _ = ranking.segment_keys(member_id, doc, now, self.rules)
            update["$set"] = keys
            due = ranking.keys_due(doc, now, self.rules)
            if due is not None:
                update["$min"] = {"due_ms": due}
        except Exception as exc:
            # Damaged: left out of the segments (logged by id only), not keyed again and again.
            log.warning("standing %r could not be keyed: %s", member_id, type(exc).__name__)
        # Only the standing as read: a write meanwhile computed its own keys.
        version = doc.get("version")
        guard = {"$exists": False} if version is None else version
        return Write.update(member_id, where({"_id": member_id, "version": guard}), update)

    # -- counts bounded by what they count ---------------------------------------------------------

    async def count_in_segment(self, key: str, last_before_ms: int | None = None) -> int:
        """Members of a segment (its rank key present), counted over that key's index alone:
        no document is read (`last_ms` is the index's second field)."""
        query: Doc = {key: {"$gt": ""}}
        if last_before_ms is not None:
            query["last_ms"] = {"$lte": last_before_ms}
        return await count(self.standing, query)

    async def count_active_since(self, since_ms: int) -> int:
        return await count(self.standing, {"last_ms": {"$gte": since_ms}})
