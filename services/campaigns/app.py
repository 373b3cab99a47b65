"""Campaigns service composition root: settings, runtime, store, consumers, scheduler, routes."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from pydantic import Field

from services.campaigns import api
from services.campaigns.consumers import CampaignsHandlers, subscriptions
from services.campaigns.context import Campaigns
from services.campaigns.repositories import CampaignsUnitOfWork
from services.campaigns.store import CampaignsStore
from services.campaigns.usecases import Lifecycle, Scoring
from shared.clock import Clock, utcnow
from shared.jobs import Leases, every
from shared.service import Composed, Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "campaigns"


class CampaignsSettings(ServiceSettings):
    scheduler_seconds: float = Field(5.0, alias="SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS", gt=0)
    end_grace_seconds: float = Field(5.0, alias="SARAFAN_CAMPAIGNS_END_GRACE_SECONDS", ge=0)


def build(settings: CampaignsSettings | None = None, clock: Clock = utcnow) -> FastAPI:
    return compose(settings, clock).app


def compose(
    settings: CampaignsSettings | None = None, clock: Clock = utcnow
) -> Composed[CampaignsStore]:
    """The service's composition root: every part made and wired once, here."""
    settings = settings or load_settings(CampaignsSettings, SERVICE)
    runtime = Runtime(SERVICE, settings, clock)
    store = CampaignsStore(runtime.db)
    # The use cases, with the unit of work that writes each change with its events (owning the
    # repositories that stage them) and the count of stored documents that lists, the
    # scheduler or the scoring had to leave out.
    unit_of_work = partial(CampaignsUnitOfWork, runtime.relay, store)
    lifecycle = Lifecycle(
        store,
        unit_of_work,
        timedelta(seconds=settings.end_grace_seconds),
        runtime.skipped,
        runtime.clock,
    )
    scoring = Scoring(store, unit_of_work, runtime.skipped, runtime.clock)
    context = Campaigns(store, lifecycle, scoring, runtime.clock, runtime.skipped)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.subscribe(subscriptions, CampaignsHandlers(scoring))
    runtime.jobs.append(
        every(
            Leases(store.jobs),
            "campaigns-scheduler",
            timedelta(seconds=settings.scheduler_seconds),
            lifecycle.tick,
        )
    )
    app = create_app(
        runtime,
        [api.router],
        title="Sarafan campaigns",
        description="Contests, referral drives, challenges and promotions.",
        context=context,
    )
    return Composed(app, store, lifecycle)
