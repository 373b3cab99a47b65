"""Activities service composition root: settings, runtime, store, consumers, jobs, routes."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "activities"


class ActivitiesSettings(ServiceSettings):
    noshow_grace_minutes: float = Field(
        60.0,
        alias="SARAFAN_NOSHOW_GRACE_MINUTES",
        ge=0,
        description="minutes after a shift's end before confirmed members without a check-in "
        "become no-shows",
    )


def build(settings: ActivitiesSettings | None = None) -> FastAPI:
    settings = settings or load_settings(ActivitiesSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    return create_app(
        runtime,
        [],
        title="Sarafan activities",
        description="Activities and shifts, sign-ups with a waitlist, reminders, attendance.",
    )
