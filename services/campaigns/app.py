"""Campaigns service composition root: settings, runtime, store, consumers, scheduler, routes."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from pydantic import Field

from services.campaigns import api
from services.campaigns.consumers import CampaignsHandlers
from services.campaigns.lifecycle import Lifecycle
from services.campaigns.store import CampaignsStore
from shared.jobs import Leases, every
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "campaigns"


class CampaignsSettings(ServiceSettings):
    scheduler_seconds: float = Field(5.0, alias="SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS", gt=0)
    end_grace_seconds: float = Field(5.0, alias="SARAFAN_CAMPAIGNS_END_GRACE_SECONDS", ge=0)


def build(settings: CampaignsSettings | None = None) -> FastAPI:
    settings = settings or load_settings(CampaignsSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    store = CampaignsStore(runtime.db)
    # Stored documents that lists, the scheduler or the scoring had to leave out, counted.
    skipped = runtime.skipped
    lifecycle = Lifecycle(
        store, runtime.relay, timedelta(seconds=settings.end_grace_seconds), skipped
    )
    handlers = CampaignsHandlers(store, runtime.relay, settings.consumer_batch, skipped)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.outbox(store.campaigns)
    runtime.outbox(store.standings)
    for consumer in handlers.consumers():
        runtime.consume(consumer)
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
    )
    app.state.store = store
    app.state.lifecycle = lifecycle
    app.state.handlers = handlers
    app.state.skipped = skipped
    return app
