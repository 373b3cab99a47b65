"""Campaigns service composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.campaigns import api
from services.campaigns.consumers import CampaignsHandlers
from services.campaigns.store import CampaignsStore
from shared.events import CampaignEnded, CampaignStarted, MilestoneReached
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "campaigns"


class CampaignsSettings(ServiceSettings):
    pass


def build(settings: CampaignsSettings | None = None) -> FastAPI:
    settings = settings or load_settings(CampaignsSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    store = CampaignsStore(runtime.db)
    handlers = CampaignsHandlers(store)
    runtime.init_hooks.append(store.ensure_indexes)
    for consumer in handlers.consumers():
        runtime.consume(consumer)
    runtime.publishes += [CampaignStarted, MilestoneReached, CampaignEnded]
    app = create_app(
        runtime, [api.router], title="Sarafan campaigns",
        description="Contests, referral drives, challenges and promotions.",
    )
    app.state.store = store
    return app
