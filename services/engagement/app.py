"""Engagement service composition root: settings, runtime, store, consumers, jobs, routes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from pydantic import Field

from services.engagement import api, api_hours, api_insights, domain
from services.engagement.consumers import EngagementHandlers, subscriptions
from services.engagement.context import Engagement
from services.engagement.contributions import DEFAULT_REACTIONS
from services.engagement.insights import CommunityGauges, Insights
from services.engagement.jobs import EngagementJobs
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.scoring import Scoring
from services.engagement.store import EngagementStore
from services.engagement.usecases import Activity, Hours, MemberEvents, Posts
from shared.clock import Clock, utcnow
from shared.jobs import Leases
from shared.service import Composed, Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "engagement"


class EngagementSettings(ServiceSettings):
    """The engagement rules (the platform's defaults) and the cadence of its periodic jobs."""

    weights: dict[str, float] = Field(
        default_factory=dict,
        alias="SARAFAN_ENGAGEMENT_WEIGHTS",
        description='JSON, e.g. {"post": 5, "hour": 2}; unnamed kinds keep their default',
    )
    level_thresholds: dict[str, float] = Field(
        default_factory=dict,
        alias="SARAFAN_ENGAGEMENT_LEVELS",
        description="JSON score thresholds by level name (participant, active, loyal, ambassador)",
    )
    half_life_days: float = Field(
        30.0, alias="SARAFAN_ENGAGEMENT_HALF_LIFE_DAYS", ge=1 / 24, le=3650
    )
    demotion_buffer: float = Field(
        domain.DEMOTION_BUFFER, alias="SARAFAN_ENGAGEMENT_DEMOTION_BUFFER", gt=0, le=1
    )
    drift_days: float = Field(14.0, alias="SARAFAN_ENGAGEMENT_DRIFT_DAYS", gt=0)
    unanswered_hours: float = Field(24.0, alias="SARAFAN_ENGAGEMENT_UNANSWERED_HOURS", gt=0)
    new_member_days: float = Field(30.0, alias="SARAFAN_ENGAGEMENT_NEW_MEMBER_DAYS", gt=0)
    reactions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REACTIONS),
        alias="SARAFAN_ENGAGEMENT_REACTIONS",
        description='JSON list of the reactions members may give, e.g. ["+1", "thanks", "🎉"]',
    )
    job_seconds: float = Field(60.0, alias="SARAFAN_ENGAGEMENT_JOB_SECONDS", gt=0)
    gauges_seconds: float = Field(30.0, alias="SARAFAN_ENGAGEMENT_GAUGES_SECONDS", gt=0)

    def rules(self) -> domain.Rules:
        return domain.Rules(
            weights={**domain.DEFAULT_WEIGHTS, **self.weights},
            thresholds={**domain.DEFAULT_THRESHOLDS, **self.level_thresholds},
            half_life=timedelta(days=self.half_life_days),
            demotion_buffer=self.demotion_buffer,
            drift_after=timedelta(days=self.drift_days),
            unanswered_after=timedelta(hours=self.unanswered_hours),
            new_member_window=timedelta(days=self.new_member_days),
            reactions=tuple(self.reactions),
        )


def build(settings: EngagementSettings | None = None, clock: Clock = utcnow) -> FastAPI:
    return compose(settings, clock).app


def compose(
    settings: EngagementSettings | None = None, clock: Clock = utcnow
) -> Composed[EngagementStore]:
    """The service's composition root: every part made and wired once, here."""
    settings = settings or load_settings(EngagementSettings, SERVICE)
    rules = settings.rules()
    runtime = Runtime(SERVICE, settings, clock)
    store = EngagementStore(runtime.db)
    # Each use case's unit of work owns the service's repositories (repositories.py).
    unit_of_work = partial(EngagementUnitOfWork, runtime.relay, store)
    scoring = Scoring(store, rules, unit_of_work)
    insights = Insights(store, rules, unit_of_work)
    engagement = Engagement(
        posts=Posts(store, unit_of_work, clock, rules.reactions),
        hours=Hours(store, unit_of_work, clock),
        members=MemberEvents(store, unit_of_work, scoring, runtime.bus.erase, clock),
        activity=Activity(store, scoring, clock),
        store=store,
        rules=rules,
        insights=insights,
        gauges=CommunityGauges(runtime.metrics),
        clock=clock,
    )
    handlers = EngagementHandlers(engagement)
    jobs = EngagementJobs(store, scoring, insights, engagement.gauges, unit_of_work, rules)

    runtime.init_hooks.append(store.ensure_indexes)

    async def key_standings() -> None:
        # Standings stored before the segments' rank keys get them once, before the first read
        # (reads still key any they meet: insights.segment); the windowed counters get the
        # month before them once (counted.unfilled, uow.counters.fill).
        await insights.prepare(clock())

    runtime.init_hooks.append(key_standings)
    runtime.subscribe(subscriptions, handlers)
    runtime.jobs += jobs.loops(
        # Its own lease owner per runtime, so two replicas in one process stay distinct.
        Leases(store.jobs, owner=uuid.uuid4().hex[:12]),
        timedelta(seconds=settings.job_seconds),
        timedelta(seconds=settings.gauges_seconds),
        clock,
    )
    app = create_app(
        runtime,
        [api.router, api_hours.router, api_insights.router],
        title="Sarafan engagement",
        description="Activity, scores and levels, volunteer hours, segments, community health.",
        context=engagement,
    )
    return Composed(app, store, jobs)
