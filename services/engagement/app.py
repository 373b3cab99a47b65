"""Engagement service composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.engagement import api
from services.engagement.consumers import EngagementHandlers
from services.engagement.store import EngagementStore
from shared.events import (
    AnswerAccepted,
    CommentAdded,
    HoursApproved,
    LevelChanged,
    MemberDrifting,
    PostCreated,
    QuestionUnanswered,
    ReactionAdded,
)
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "engagement"


class EngagementSettings(ServiceSettings):
    pass


def build(settings: EngagementSettings | None = None) -> FastAPI:
    settings = settings or load_settings(EngagementSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    store = EngagementStore(runtime.db)
    handlers = EngagementHandlers(store)
    runtime.init_hooks.append(store.ensure_indexes)
    for consumer in handlers.consumers():
        runtime.consume(consumer)
    runtime.publishes += [PostCreated, CommentAdded, ReactionAdded, AnswerAccepted, LevelChanged,
                          HoursApproved, MemberDrifting, QuestionUnanswered]
    app = create_app(
        runtime, [api.router], title="Sarafan engagement",
        description="Activity, scores and levels, volunteer hours, segments, community health.",
    )
    app.state.store = store
    return app
