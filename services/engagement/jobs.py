"""Periodic work: drift episodes, standings that time changes, unanswered questions, gauges.

Each scan takes `now` and is idempotent on its own: its events have ids derived from their cause
and ride in the same conditional update that marks the cause as handled, so two replicas (or a
lease that expired mid-run) never emit an event twice. The lease only saves the duplicate work.
Each reads only what it acts on: members who crossed the drift line since the last scan,
standings whose `due_ms` has come, questions still open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from services.engagement import domain
from services.engagement.insights import CommunityGauges, Insights
from services.engagement.scoring import Scoring, derived_event_id
from services.engagement.store import EngagementStore, from_ms
from shared.events import MemberDrifting, QuestionUnanswered, new_event
from shared.jobs import Leases, every
from shared.outbox import Relay
from shared.store import epoch_ms

log = logging.getLogger("sarafan.engagement.jobs")

Clock = Callable[[], datetime]
#: Standings settled per round of the due scan.
DUE_BATCH = 500


class EngagementJobs:
    def __init__(
        self,
        store: EngagementStore,
        scoring: Scoring,
        insights: Insights,
        gauges: CommunityGauges,
        relay: Relay,
        rules: domain.Rules,
    ) -> None:
        self.store = store
        self.scoring = scoring
        self.insights = insights
        self.gauges = gauges
        self.relay = relay
        self.rules = rules

    async def scan_drifting(self, now: datetime) -> int:
        """Emit member-drifting once per drift episode, then settle the standings time changed
        (decay demotes, windows move, old days fold).

        An episode is named by the member's last activity before it: the marker on the member's
        standing (`drift_from_ms`) is set in the same update that stages the event. Only members
        whose episode has begun and is not reported yet are read (`drift_due_ms`).
        """
        emitted = 0
        while True:
            due = await self.store.drift_due(epoch_ms(now), DUE_BATCH)
            for doc in due:
                last_ms = int(doc.get("last_ms") or 0)
                if doc.get("level") not in domain.DRIFT_LEVELS or not last_ms:
                    await self.store.drift_reported(doc["_id"])
                elif int(doc.get("drift_from_ms") or 0) >= last_ms:
                    await self.store.drift_reported(doc["_id"])  # reported by a twin scan
                elif await self._flag(doc, now):
                    emitted += 1
            if len(due) < DUE_BATCH:
                break
        await self.settle_due(now)
        if emitted:
            log.info("%d member(s) started drifting", emitted)
        return emitted

    async def _flag(self, doc: dict, now: datetime) -> bool:
        member_id, last_ms = doc["_id"], int(doc["last_ms"])
        last_active = from_ms(last_ms)
        event = new_event(
            MemberDrifting(
                member_id=member_id,
                level=doc["level"],
                last_active_at=last_active,
                days_inactive=domain.days_inactive(last_active, now),
            ),
            event_id=derived_event_id("member-drifting", member_id, str(last_ms)),
            time=now,
        )
        if await self.store.flag_drift(member_id, last_ms, epoch_ms(now), event):
            self.relay.kick(self.store.standing, member_id, [event])
            return True
        return False

    async def settle_due(self, now: datetime) -> int:
        """Settle every standing whose `due_ms` has come, in rounds (bounded by what is due)."""
        settled = 0
        while True:
            due = await self.store.due(epoch_ms(now), DUE_BATCH)
            if not due:
                return settled
            await self.scoring.settle(due, now)
            settled += len(due)
            if len(due) < DUE_BATCH:
                return settled

    async def scan_unanswered(self, now: datetime) -> int:
        """Emit question-unanswered once per question with no answer after the configured hours."""
        emitted = 0
        for post in await self.store.open_questions(epoch_ms(now - self.rules.unanswered_after)):
            asker = post.get("author_id")
            created = from_ms(post["created_ms"])
            if not asker:
                await self.store.close_question(post["_id"])
                continue
            # An answer the consumer has not noted yet counts too: look at the comments.
            answered = await self.store.has_answer(post["_id"], asker)
            if answered:
                await self.store.close_question(post["_id"])
                continue
            if not domain.is_unanswered(created, answered, now, self.rules):
                continue
            member = await self.store.member(asker) or {}
            event = new_event(
                QuestionUnanswered(
                    post_id=post["_id"],
                    asker_id=asker,
                    region=member.get("region") or post.get("region") or "",
                    hours_open=int((now - created) / timedelta(hours=1)),
                ),
                event_id=derived_event_id("question-unanswered", post["_id"]),
                time=now,
            )
            if await self.store.flag_unanswered(post["_id"], epoch_ms(now), event):
                self.relay.kick(self.store.posts, post["_id"], [event])
                emitted += 1
        return emitted

    async def fold_counters(self, now: datetime) -> None:
        await self.store.counters.fold(now)

    async def refresh_gauges(self, now: datetime) -> dict[str, float | int | None]:
        figures = await self.insights.figures(now)
        self.gauges.show(figures)
        return figures

    def loops(
        self, leases: Leases, scan_every: timedelta, gauges_every: timedelta, clock: Clock
    ) -> list[Callable[[], Awaitable[None]]]:
        """The Runtime jobs: the scans on one replica at a time, gauges on every replica
        (each replica's /metrics is scraped on its own)."""

        async def gauges_loop() -> None:
            while True:
                try:
                    await self.refresh_gauges(clock())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("refreshing the community gauges failed")
                await asyncio.sleep(gauges_every.total_seconds())

        return [
            every(leases, "engagement-drifting", scan_every, self.scan_drifting),
            every(leases, "engagement-unanswered", scan_every, self.scan_unanswered),
            every(leases, "engagement-counters", max(scan_every, timedelta(minutes=5)),
                  self.fold_counters),
            gauges_loop,
        ]  # fmt: skip
