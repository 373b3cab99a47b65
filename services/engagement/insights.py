"""What the organisation reads: a member's engagement, segments, leaderboards, community health."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from services.engagement import domain
from services.engagement.scoring import Scoring
from services.engagement.store import Doc, EngagementStore, from_ms
from shared.metrics import Metrics
from shared.store import epoch_ms

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
COUNTS = {
    "posts": "n_post",
    "questions": "n_question",
    "comments": "n_comment",
    "reactions_received": "n_reaction_received",
    "reactions_given": "n_reaction_given",
    "answers_accepted": "n_answer_accepted",
    "referrals": "n_referral",
}


class Insights:
    def __init__(self, store: EngagementStore, scoring: Scoring, rules: domain.Rules) -> None:
        self.store = store
        self.scoring = scoring
        self.rules = rules

    # -- one member -------------------------------------------------------------------------------

    async def engagement(self, member: Doc, now: datetime) -> dict[str, Any]:
        member_id = member["_id"]
        buckets = await self.store.buckets([member_id])
        horizon = epoch_ms(domain.score_horizon(now, self.rules))
        score = domain.score_of_buckets(
            [
                (from_ms(b["day_ms"]), float(b.get("mass", 0)))
                for b in buckets
                if b["day_ms"] >= horizon
            ],
            now,
            self.rules,
        )
        standing = (await self.store.standings([member_id])).get(member_id, {})
        level = standing.get("level", domain.LEVELS[0])
        rank = domain.rank_of(level)
        upper = domain.LEVELS[rank + 1] if rank + 1 < len(domain.LEVELS) else None
        last_ms = max((b["last_ms"] for b in buckets if b.get("last_ms")), default=None)
        active_days = [from_ms(b["day_ms"]).date() for b in buckets if b.get("last_ms")]  # type: ignore[union-attr]
        return {
            "member_id": member_id,
            "score": round(score, 2),
            "level": level,
            "next_level": upper,
            "next_level_score": self.rules.threshold(upper) if upper else None,
            "counts": {
                name: int(sum(b.get(field, 0) for b in buckets)) for name, field in COUNTS.items()
            },
            "points_total": round(sum(float(b.get("points", 0)) for b in buckets), 2),
            "hours_approved": round(sum(float(b.get("hours", 0)) for b in buckets), 2),
            "last_active_at": from_ms(last_ms),
            "streak_days": domain.streak(active_days, now.date()),
            "joined_at": from_ms(member.get("joined_at_ms")),
        }

    # -- segments ---------------------------------------------------------------------------------

    async def segment(self, name: str, now: datetime) -> list[dict[str, Any]]:
        """Members of a segment, the ones to look at first first."""
        if name == "new-promising":
            members = await self.store.members_joined_since(now - self.rules.new_member_window)
            rows = await self._rows({m["_id"]: m for m in members}, now)
            rows.sort(
                key=lambda r: (-r["score"], -(r["joined_at"] or now).timestamp(), r["member_id"])
            )
            return rows
        if name == "loyal":
            rows = await self._rows_at_levels(domain.LOYAL_LEVELS, now)
            rows.sort(key=lambda r: (-r["score"], r["member_id"]))
            return rows
        if name == "drifting":
            rows = await self._rows_at_levels(domain.DRIFT_LEVELS, now)
            rows = [
                r
                for r in rows
                if domain.is_drifting(r["level"], r["last_active_at"], now, self.rules)
            ]
            rows.sort(key=lambda r: (-r["score"], r["member_id"]))
            return rows
        raise KeyError(name)

    async def _rows_at_levels(self, levels: Iterable[str], now: datetime) -> list[dict[str, Any]]:
        standings = await self.store.standings_at(levels)
        members = await self.store.members_by_id(s["_id"] for s in standings)
        active = {m: doc for m, doc in members.items() if doc.get("status") == "active"}
        return await self._rows(active, now)

    async def _rows(self, members: dict[str, Doc], now: datetime) -> list[dict[str, Any]]:
        if not members:
            return []
        scores = await self.scoring.scores(members, now)
        standings = await self.store.standings(members)
        last = await self.store.last_active(members)
        rows = []
        for member_id, doc in members.items():
            last_active = from_ms(last.get(member_id))
            rows.append(
                {
                    "member_id": member_id,
                    "display_name": doc.get("display_name"),
                    "region": doc.get("region"),
                    "level": standings.get(member_id, {}).get("level", domain.LEVELS[0]),
                    "score": round(scores[member_id], 2),
                    "joined_at": from_ms(doc.get("joined_at_ms")),
                    "last_active_at": last_active,
                    "days_inactive": domain.days_inactive(last_active, now)
                    if last_active
                    else None,
                }
            )
        return rows

    # -- leaderboard ------------------------------------------------------------------------------

    async def leaderboard(
        self, period: str, region: str | None, limit: int, now: datetime
    ) -> list[dict[str, Any]]:
        """Points earned in the period (whole UTC days: 7d is today and the 6 days before),
        without decay; `all` is every point ever earned. Members who left are not ranked."""
        days = PERIODS[period]
        since = domain.day_of(now) - timedelta(days=days - 1) if days else None
        active = await self.store.active_member_ids(region)
        rows = await self.store.points_by_member(since, active if region else None)
        top = [r for r in rows if r["_id"] in active][:limit]
        members = await self.store.members_by_id(r["_id"] for r in top)
        standings = await self.store.standings(r["_id"] for r in top)
        return [
            {
                "rank": i + 1,
                "member_id": r["_id"],
                "display_name": members[r["_id"]].get("display_name"),
                "region": members[r["_id"]].get("region"),
                "points": round(float(r["points"]), 2),
                "level": standings.get(r["_id"], {}).get("level", domain.LEVELS[0]),
            }
            for i, r in enumerate(top)
        ]

    # -- community health -------------------------------------------------------------------------

    async def figures(self, now: datetime) -> dict[str, float | int | None]:
        week, month = now - timedelta(days=7), now - timedelta(days=30)
        store = self.store
        loyal = await self._rows_at_levels(domain.LOYAL_LEVELS, now)
        questions = await store.questions_since(month)
        waits = [
            (q["first_answer_ms"] - q["created_ms"]) / 1000
            for q in questions
            if q.get("first_answer_ms") is not None
        ]
        joins = await store.count_members({"joined_at_ms": {"$gt": 0}})
        referred = await store.count_members(
            {"joined_at_ms": {"$gt": 0}, "referred_by": {"$type": "string"}}
        )
        median = domain.median(waits)
        return {
            "members_total": await store.count_members({"status": "active"}),
            "active_7d": await store.count_active_since(week),
            "active_30d": await store.count_active_since(month),
            "new_7d": await store.count_members({"joined_at_ms": {"$gte": epoch_ms(week)}}),
            "loyal_pool": len(loyal),
            "posts_7d": await store.count_posts_since(week),
            "questions_7d": await store.count_posts_since(week, "question"),
            "answered_by_community_ratio": domain.ratio(len(waits), len(questions)),
            "median_seconds_to_first_answer": round(median, 1) if median is not None else None,
            "referral_join_share": domain.ratio(referred, joins),
            "returned_after_drift_30d": await store.count_returns_since(month),
            "drifting": len(await self.segment("drifting", now)),
            "hours_approved_30d": round(await store.hours_since(month), 2),
        }


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
