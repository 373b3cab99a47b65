"""Activities service composition root: settings, runtime, store, use cases, consumers, jobs,
routes."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta

from fastapi import FastAPI
from pydantic import Field

from services.activities import api, api_attendance, api_signups, page
from services.activities.consumers import ActivitiesHandlers, subscriptions
from services.activities.context import Activities
from services.activities.jobs import ActivitiesJobs
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases import (
    Attendance,
    CheckinLinks,
    CommunityGauges,
    Ledger,
    MembersFollower,
    Planning,
    ShiftTally,
    SignUps,
)
from shared.clock import Clock, utcnow
from shared.jobs import Leases
from shared.service import Composed, Runtime, create_app
from shared.settings import ServiceSettings, load_settings
from shared.topology import PORTS

SERVICE = "activities"


class ActivitiesSettings(ServiceSettings):
    noshow_grace_minutes: float = Field(
        60.0,
        alias="SARAFAN_NOSHOW_GRACE_MINUTES",
        ge=0,
        le=7 * 24 * 60,
        description="minutes after a shift's end before confirmed members without a check-in "
        "become no-shows",
    )
    close_seconds: float = Field(
        30.0,
        alias="SARAFAN_ACTIVITIES_CLOSE_SECONDS",
        gt=0,
        description="how often shifts past their end plus the grace are closed",
    )
    repair_seconds: float = Field(
        10.0,
        alias="SARAFAN_ACTIVITIES_REPAIR_SECONDS",
        gt=0,
        description="how often work a crash interrupted is finished",
    )
    gauges_seconds: float = Field(30.0, alias="SARAFAN_ACTIVITIES_GAUGES_SECONDS", gt=0)
    public_url: str = Field(
        f"http://127.0.0.1:{PORTS[SERVICE]}",
        alias="SARAFAN_ACTIVITIES_PUBLIC_URL",
        max_length=300,
        description="the address coordinators' phones reach this service at (check-in links)",
    )


def use_cases(runtime: Runtime, store: ActivitiesStore, settings: ActivitiesSettings) -> Activities:
    """The use cases on the store, each writing through the service's unit of work (its
    repositories over the store, published by the runtime's relay) and reading the time from
    the runtime's clock."""
    uow, clock = functools.partial(ActivitiesUnitOfWork, runtime.relay, store), runtime.clock
    ledger = Ledger(store, uow)
    tally = ShiftTally(store, uow)
    grace = timedelta(minutes=settings.noshow_grace_minutes)
    return Activities(
        store=store,
        ledger=ledger,
        signups=SignUps(store, ledger, uow, clock),
        planning=Planning(store, ledger, uow, clock),
        attendance=Attendance(store, ledger, tally, uow, grace, clock),
        tally=tally,
        links=CheckinLinks(store, uow, settings.public_url, clock),
        members=MembersFollower(store, ledger, uow, runtime.bus.erase),
        gauges=CommunityGauges(runtime.metrics),
        grace=grace,
        clock=clock,
        skipped=runtime.skipped,
        page_limits=page.page_limits(),
    )


def build(settings: ActivitiesSettings | None = None, clock: Clock = utcnow) -> FastAPI:
    return compose(settings, clock).app


def compose(
    settings: ActivitiesSettings | None = None, clock: Clock = utcnow
) -> Composed[ActivitiesStore]:
    """The service's composition root: every part made and wired once, here."""
    settings = settings or load_settings(ActivitiesSettings, SERVICE)
    runtime = Runtime(SERVICE, settings, clock)
    store = ActivitiesStore(runtime.db)
    activities = use_cases(runtime, store, settings)
    jobs = ActivitiesJobs(activities)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.subscribe(subscriptions, ActivitiesHandlers(activities.members, activities.now))
    runtime.jobs += jobs.loops(
        # Its own lease owner per runtime, so two replicas in one process stay distinct.
        Leases(store.jobs, owner=uuid.uuid4().hex[:12]),
        timedelta(seconds=settings.close_seconds),
        timedelta(seconds=settings.repair_seconds),
        timedelta(seconds=settings.gauges_seconds),
        activities.now,
    )
    app = create_app(
        runtime,
        [api.router, api_signups.router, api_attendance.router, page.router],
        title="Sarafan activities",
        description="Activities and shifts, sign-ups with a waitlist, attendance and its hours.",
        context=activities,
    )
    return Composed(app, store, jobs)
