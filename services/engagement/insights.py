"""What the organisation reads: a member's engagement, segments, leaderboards, community health.

Every read costs what it returns, not the size of the community: pages follow indexes on the
members' standings (standings.py), figures are kept counters or counts bounded by their window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from services.engagement import counted, domain, ranking
from services.engagement.record import Record
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.standings import KEYING_BATCH, Standings
from services.engagement.store import EngagementStore
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc
from shared.metrics import Metrics
from shared.query import count, where

log = logging.getLogger("sarafan.engagement")

SEGMENTS = ("new-promising", "drifting", "loyal")
PERIODS = {"7d": 7, "30d": 30, "all": None}
#: Every figure of GET /v1/stats; each is also the gauge `sarafan_community_<figure>`.
FIGURES: dict[str, str] = {
    "members_total": "Members in the community now (joined and not left)",
    "active_7d": "Members who did something in the last 7 days",
    "active_30d": "Members who did something in the last 30 days",
    "new_7d": "Members who joined in the last 7 days",
    "loyal_pool": "Members at level loyal or ambassador",
    "posts_7d": "Posts of every kind (questions included) in the last 7 days",
    "questions_7d": "Questions asked in the last 7 days",
    "answered_by_community_ratio": "Share of last 30 days questions answered by another member",
    "median_seconds_to_first_answer": "Median time to a question's first answer, last 30 days",
    "referral_join_share": "Share of joins that came by referral (word of mouth)",
    "returned_after_drift_30d": "Drifting members who came back in the last 30 days",
    "drifting": "Members at level active or above with no activity for the drift period",
    "hours_approved_30d": "Volunteer hours approved in the last 30 days",
}
#: The counts of GET /v1/members/{id}/engagement, by the kind of fact they count.
COUNTS = {
    "posts": "post",
    "questions": "question",
    "comments": "comment",
    "reactions_received": "reaction_received",
    "reactions_given": "reaction_given",
    "answers_accepted": "answer_accepted",
    "referrals": "referral",
}


class Insights:
    def __init__(
        self,
        store: EngagementStore,
        rules: domain.Rules,
        unit_of_work: Callable[[], EngagementUnitOfWork],
    ) -> None:
        self.store = store
        self.rules = rules
        self.unit_of_work = unit_of_work
        self.standings = Standings(store, rules)

    # -- keeping what the figures read ------------------------------------------------------------

    async def prepare(self, now: datetime) -> None:
        """At start: standings stored before the segments' rank keys get them once, before the
        first read (reads still key any they meet); the windowed counters get the month before
        them once (counted.unfilled, staged by `uow.counters.fill`, made on leaving the unit of
        work)."""
        await self.key_unkeyed(now)
        deltas = await counted.unfilled(self.store, now)
        if deltas is not None:
            async with self.unit_of_work() as uow:
                uow.counters.fill(deltas, now)

    async def key_unkeyed(self, now: datetime) -> int:
        """Give their segment keys to standings written without them (Standings.unkeyed), so
        that no member silently drops out of a segment; a round at a time, each committed
        before the next read (which must not find them again). Returns how many were keyed."""
        keyed, tried = 0, set()
        while True:
            docs = await self.standings.unkeyed()
            fresh = [d for d in docs if d["_id"] not in tried]
            if not fresh:
                return keyed
            tried.update(d["_id"] for d in fresh)
            async with self.unit_of_work() as uow:
                result = await uow.commit(uow.standings.key(self.standings.keys(fresh, now)))
            keyed += result.modified_count if result is not None else 0
            if len(docs) < KEYING_BATCH:
                return keyed

    # -- one member -------------------------------------------------------------------------------

    async def engagement(self, member: Doc, now: datetime) -> dict[str, Any]:
        member_id = member["_id"]
        standing = (await self.store.standings([member_id])).get(member_id, {})
        record = Record.of(standing)
        level = standing.get("level", domain.LEVELS[0])
        rank = domain.rank_of(level)
        upper = domain.LEVELS[rank + 1] if rank + 1 < len(domain.LEVELS) else None
        return {
            "member_id": member_id,
            "score": round(record.score(now, self.rules), 2),
            "level": level,
            "next_level": upper,
            "next_level_score": self.rules.threshold(upper) if upper else None,
            "counts": {name: record.counts.get(kind, 0) for name, kind in COUNTS.items()},
            "points_total": round(record.points_total, 2),
            "hours_approved": round(record.hours_total, 2),
            "last_active_at": _time(record.last_ms),
            "streak_days": record.streak(now.date()),
            "joined_at": _time(member.get("joined_at_ms")),
        }

    # -- segments ---------------------------------------------------------------------------------

    async def segment(
        self, name: str, now: datetime, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of a segment, the members to look at first first; and whether more follow.

        Read in the order of the segment's rank key (ranking.py): the page and one row more,
        whatever the size of the segment or of the community."""
        key, still_in = ranking.KEY_OF[name], self._still_in(name, now)
        await self.key_unkeyed(now)
        docs = await self.standings.segment(key, still_in, offset, limit + 1)
        return await self._rows(docs[:limit], now), len(docs) > limit

    def _still_in(self, name: str, now: datetime) -> Callable[[Doc], bool]:
        """Whether a member read by their key is in the segment now: a key whose window closed
        stays until the write `due_ms` calls for (new-promising), and one written under an
        earlier drift setting until the member's next write (drifting)."""
        if name == "new-promising":
            since = epoch_ms(now - self.rules.new_member_window)
            return lambda doc: _int(doc.get("joined_ms")) >= since
        if name == "drifting":
            cut = epoch_ms(now - self.rules.drift_after)
            return lambda doc: 0 < _int(doc.get("last_ms")) <= cut
        if name == "loyal":
            return lambda doc: True
        raise KeyError(name)

    async def _rows(self, standings: list[Doc], now: datetime) -> list[dict[str, Any]]:
        members = await self.store.members_by_id(d["_id"] for d in standings)
        rows = []
        for doc in standings:
            try:
                rows.append(self._row(doc, members.get(doc["_id"], {}), now))
            except Exception as exc:
                # One damaged standing must not take the page down (logged by id only).
                log.warning("left out standing %r of a segment: %s", doc["_id"], type(exc).__name__)
        return rows

    def _row(self, doc: Doc, member: Doc, now: datetime) -> dict[str, Any]:
        last_active = _time(doc.get("last_ms"))
        return {
            "member_id": doc["_id"],
            "display_name": member.get("display_name"),
            "region": member.get("region"),
            "level": doc.get("level", domain.LEVELS[0]),
            "score": round(Record.of(doc).score(now, self.rules), 2),
            "joined_at": _time(member.get("joined_at_ms")),
            "last_active_at": last_active,
            "days_inactive": domain.days_inactive(last_active, now) if last_active else None,
        }

    # -- leaderboard ------------------------------------------------------------------------------

    async def leaderboard(
        self, period: str, region: str | None, limit: int, now: datetime
    ) -> list[dict[str, Any]]:
        """Points earned in the period (whole UTC days: 7d is today and the 6 days before),
        without decay; `all` is every point ever earned. Members who left are not ranked."""
        days = PERIODS[period]
        if days is None:
            docs = await self.standings.ranked("rank_all", region, "", limit)
            top = [(p, d) for d in docs if (p := _number(d, "points_total")) is not None]
        else:
            top = await self._window_top(days, region, limit, now)
        members = await self.store.members_by_id(d["_id"] for _, d in top)
        return [
            {
                "rank": i + 1,
                "member_id": d["_id"],
                "display_name": members.get(d["_id"], {}).get("display_name"),
                "region": members.get(d["_id"], {}).get("region"),
                "points": round(points, 2),
                "level": d.get("level", domain.LEVELS[0]),
            }
            for i, (points, d) in enumerate(top)
        ]

    async def _window_top(
        self, days: int, region: str | None, limit: int, now: datetime
    ) -> list[tuple[float, Doc]]:
        """The top of a window by its rank key, correcting on read what a day's passing changed.

        A standing's window points were computed when it was last written; they stay right
        until its oldest day in the window leaves it (`w<days>_until_ms`). One that is stale can
        only have lost points since, so its stored key is an upper bound: walking the keys in
        order and recomputing stale rows from the record, a row is final once it sorts before
        the bound of every row not read yet (the periodic job rewrites the stale ones).
        """
        short = str(days)
        rank, stored, until = f"rank{short}", f"p{short}", f"w{short}_until_ms"
        today_ms = epoch_ms(domain.day_of(now))
        chunk = max(2 * limit, 20)
        found: list[tuple[float, str, Doc]] = []
        after = ""
        while True:
            docs = await self.standings.ranked(rank, region, after, chunk)
            for doc in docs:
                try:
                    if int(doc.get(until) or 0) > today_ms:
                        points, facts = float(doc.get(stored) or 0), 1
                    else:
                        points, facts, _ = Record.of(doc).window(now, days)
                except Exception as exc:
                    log.warning("left out standing %r of a leaderboard: %s", doc["_id"],
                                type(exc).__name__)  # fmt: skip
                    continue
                if facts:
                    found.append((points, doc["_id"], doc))
            if len(docs) < chunk:
                break
            after = docs[-1][rank]
            last = _number(docs[-1], stored)
            if last is None:
                continue  # no bound from a damaged row: read on
            bound = (-last, docs[-1]["_id"])
            if sum(1 for p, m, _ in found if (-p, m) <= bound) >= limit:
                break
        found.sort(key=lambda row: (-row[0], row[1]))
        return [(points, doc) for points, _, doc in found[:limit]]

    # -- community health -------------------------------------------------------------------------

    async def figures(self, now: datetime) -> dict[str, float | int | None]:
        """Community health: kept counters (counted.py) but for the median wait, which reads
        the month's answered questions in wait order."""
        store, standings = self.store, self.standings
        week, month = epoch_ms(now - timedelta(days=7)), epoch_ms(now - timedelta(days=30))
        first_day = epoch_ms(domain.day_of(now - timedelta(days=30)))
        await self.key_unkeyed(now)  # the pool and the drifting are counted by their keys
        kept = await counted.windowed(store, now, {"week": week, "month": month,
                                                   "hours": first_day})  # fmt: skip
        answered = where(answered_created_ms={"$gte": month})
        median = await self._median_wait(answered, await count(store.posts, answered))
        drift_cut = epoch_ms(now - self.rules.drift_after)
        return {
            "members_total": round(kept["members"]),
            "active_7d": await standings.count_active_since(week),
            "active_30d": await standings.count_active_since(month),
            "new_7d": round(kept["new_7d"]),
            "loyal_pool": await standings.count_in_segment(ranking.LOYAL_KEY),
            "posts_7d": round(kept["posts_7d"]),
            "questions_7d": round(kept["questions_7d"]),
            "answered_by_community_ratio": domain.ratio(
                round(kept["answered_30d"]), round(kept["questions_30d"])
            ),
            "median_seconds_to_first_answer": round(median, 1) if median is not None else None,
            "referral_join_share": domain.ratio(round(kept["referred"]), round(kept["joins"])),
            "returned_after_drift_30d": round(kept["returns_30d"]),
            "drifting": await standings.count_in_segment(ranking.DRIFT_KEY, drift_cut),
            "hours_approved_30d": round(kept["hours_30d"], 2),
        }

    async def _median_wait(self, answered: Doc, n: int) -> float | None:
        """The median wait for a first answer, in seconds: the server sorts, we read one or two."""
        if n == 0:
            return None
        middle = (n - 1) // 2
        found = (
            self.store.posts.find(answered, {"wait_ms": 1})
            .sort("wait_ms", 1)
            .skip(middle)
            .limit(1 if n % 2 else 2)
        )
        waits = [float(d["wait_ms"]) / 1000 async for d in found]
        return sum(waits) / len(waits) if waits else None


def _time(ms: Any) -> datetime | None:
    """A stored time that may be absent (a member who joined before it was kept)."""
    return None if ms is None else from_ms(ms)


def _int(value: Any) -> int:
    """A stored time in epoch ms; 0 when absent or unreadable (a damaged document)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _number(doc: Doc, name: str) -> float | None:
    """A stored number, 0 when absent; None when it is not a number (a damaged document)."""
    try:
        value = float(doc.get(name) or 0)
    except (TypeError, ValueError):
        log.warning("standing %r has a damaged %s", doc.get("_id"), name)
        return None
    return value if math.isfinite(value) else None


class CommunityGauges:
    """The figures of /v1/stats as `sarafan_community_*` gauges (NaN while a ratio is undefined)."""

    def __init__(self, metrics: Metrics) -> None:
        self.service = metrics.service
        self.gauges: dict[str, Gauge] = {
            name: metrics.gauge(f"sarafan_community_{name}", doc) for name, doc in FIGURES.items()
        }

    def show(self, figures: dict[str, float | int | None]) -> None:
        for name, gauge in self.gauges.items():
            value = figures.get(name)
            gauge.labels(self.service).set(math.nan if value is None else float(value))
