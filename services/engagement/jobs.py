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

from services.engagement import domain, ranking
from services.engagement.insights import CommunityGauges, Insights
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.scoring import Scoring, derived_event_id
from services.engagement.store import EngagementStore
from shared.clock import Clock, epoch_ms, from_ms
from shared.events import MemberDrifting, QuestionUnanswered, new_event
from shared.jobs import Leases, every
from shared.store import TRANSIENT_DB_ERRORS

log = logging.getLogger("sarafan.engagement.jobs")

#: Standings settled per round of the due scan.
DUE_BATCH = 500
#: How long a standing a scan could not handle waits before the scans try it again.
SET_ASIDE = timedelta(hours=1)


class EngagementJobs:
    def __init__(
        self,
        store: EngagementStore,
        scoring: Scoring,
        insights: Insights,
        gauges: CommunityGauges,
        unit_of_work: Callable[[], EngagementUnitOfWork],
        rules: domain.Rules,
    ) -> None:
        self.store = store
        self.scoring = scoring
        self.insights = insights
        self.gauges = gauges
        self.unit_of_work = unit_of_work
        self.rules = rules

    async def scan_drifting(self, now: datetime) -> int:
        """Emit member-drifting once per drift episode, then settle the standings time changed
        (decay demotes, windows move, old days fold).

        An episode is named by the member's last activity before it: the marker on the member's
        standing (`drift_from_ms`) is set in the same update that stages the event. Only members
        whose episode has begun and is not reported yet are read (`drift_due_ms`). Each member
        is handled in its own try: one that fails is logged and set aside for a while, and the
        others are reported.
        """
        emitted = 0
        while True:
            due = await self.store.drift_due(epoch_ms(now), DUE_BATCH)
            failed = 0
            for doc in due:
                try:
                    emitted += await self._drift(doc, now)
                except TRANSIENT_DB_ERRORS:
                    raise  # the database is away: the next run does it all
                except Exception:
                    failed += 1
                    log.exception("the drift of member %s could not be handled", doc["_id"])
                    await self._set_aside(doc["_id"], "drift_due_ms", now)
            # A round in which nothing could be handled ends the scan (no loop on bad ones).
            if len(due) < DUE_BATCH or failed == len(due):
                break
        await self.settle_due(now)
        if emitted:
            log.info("%d member(s) started drifting", emitted)
        return emitted

    async def _drift(self, doc: dict, now: datetime) -> int:
        last_ms = int(doc.get("last_ms") or 0)
        if doc.get("level") not in domain.DRIFT_LEVELS or not last_ms:
            await self.store.drift_reported(doc["_id"])
        elif int(doc.get("drift_from_ms") or 0) >= last_ms:
            await self.store.drift_reported(doc["_id"])  # reported by a twin scan
        elif not domain.is_drifting(doc["level"], from_ms(last_ms), now, self.rules):
            return 0  # due by an older setting: the rule says when, the marker stays
        elif await self._flag(doc, now):
            return 1
        return 0

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
        # The member enters the `drifting` segment with the episode (ranking.py).
        keys, _ = ranking.segment_keys(member_id, doc, now, self.rules)
        drift_key = {k: v for k, v in keys.items() if k == ranking.DRIFT_KEY}
        version = doc.get("version")
        async with self.unit_of_work() as uow:
            opened = uow.standings.flag_drift(
                member_id, last_ms, epoch_ms(now), event, keys=drift_key,
                version=int(version) if version is not None else None,
            )  # fmt: skip
            return await uow.commit(opened)

    async def _set_aside(self, member_id: str, due_field: str, now: datetime) -> None:
        """A standing a scan could not handle is due again only after SET_ASIDE, so that it
        neither blocks the scan's rounds nor is retried on every run."""
        try:
            await self.store.postpone(member_id, due_field, epoch_ms(now + SET_ASIDE))
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception:
            log.exception("member %s could not be set aside either", member_id)

    async def settle_due(self, now: datetime) -> int:
        """Settle every standing whose `due_ms` has come, in rounds (bounded by what is due).

        A round is one batch; when the batch fails, its members are settled one by one, so a
        member whose standing cannot be settled is logged and set aside and the others are not
        held up by it.
        """
        settled = 0
        while True:
            due = await self.store.due(epoch_ms(now), DUE_BATCH)
            if not due:
                return settled
            done = await self._settle(due, now)
            settled += done
            if len(due) < DUE_BATCH or done == 0:
                return settled

    async def _settle(self, due: list[str], now: datetime) -> int:
        try:
            await self.scoring.settle(due, now)
            return len(due)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception:
            log.warning("settling %d standing(s) at once failed; one by one", len(due),
                        exc_info=True)  # fmt: skip
        done = 0
        for member_id in due:
            try:
                await self.scoring.settle([member_id], now)
                done += 1
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception:
                log.exception("the standing of member %s could not be settled", member_id)
                await self._set_aside(member_id, "due_ms", now)
        return done

    async def scan_unanswered(self, now: datetime) -> int:
        """Emit question-unanswered once per question with no answer after the configured hours
        (each question in its own try: one that fails is logged, the others are reported)."""
        emitted = 0
        for post in await self.store.open_questions(epoch_ms(now - self.rules.unanswered_after)):
            try:
                emitted += await self._unanswered(post, now)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception:
                log.exception("question %s could not be checked for answers", post["_id"])
        return emitted

    async def _unanswered(self, post: dict, now: datetime) -> int:
        asker = post.get("author_id")
        created = from_ms(post["created_ms"])
        if not asker:
            await self.store.close_question(post["_id"])
            return 0
        # An answer the consumer has not noted yet counts too: look at the comments.
        answered = await self.store.has_answer(post["_id"], asker)
        if answered:
            await self.store.close_question(post["_id"])
            return 0
        if not domain.is_unanswered(created, answered, now, self.rules):
            return 0
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
        async with self.unit_of_work() as uow:
            step = uow.posts.flag_unanswered(post["_id"], epoch_ms(now), event)
            flagged = (await uow.commit(step)).modified_count == 1
        return int(flagged)

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
            every(leases, "engagement-counters", scan_every, self.fold_counters),
            gauges_loop,
        ]  # fmt: skip
