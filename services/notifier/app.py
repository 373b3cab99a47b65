"""Notifier service composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifier import api
from services.notifier.consumers import NotifierHandlers
from services.notifier.store import NotifierStore
from shared.events import NotificationFailed, NotificationSent
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "notifier"


class NotifierSettings(ServiceSettings):
    pass


def build(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or load_settings(NotifierSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    store = NotifierStore(runtime.db)
    handlers = NotifierHandlers(store, runtime.relay)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.outbox(store.deliveries)
    for consumer in handlers.consumers():
        runtime.consume(consumer)
    runtime.publishes += [NotificationSent, NotificationFailed]
    app = create_app(
        runtime, [api.router], title="Sarafan notifier",
        description="Fans messages out to members: in-app, email, webhook, telegram.",
    )
    app.state.store = store
    return app
