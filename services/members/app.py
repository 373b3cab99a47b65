"""Members service composition root: settings, runtime, store, erasure, use cases, the
context the routes reach (context.py), routes (and the admin endpoint for the API keys every
service accepts). Members consumes no events, so it declares no subscriptions."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.members import api, api_import, api_keys, importer, unsubscribe
from services.members.context import Members
from services.members.erasure import Eraser
from services.members.store import MemberStore, MembersUnitOfWork
from services.members.usecases import MemberUseCases
from shared.clock import Clock, utcnow
from shared.service import Composed, Runtime, create_app
from shared.settings import ServiceSettings, load_settings
from shared.unsubscribe import UnsubscribeSecret

SERVICE = "members"


class MembersSettings(ServiceSettings):
    # A refused value is not echoed: it may be a secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    phone_region: str = Field(
        "RU",
        alias="SARAFAN_MEMBERS_PHONE_REGION",
        description="ISO country whose national phone formats are read (8 916 ... → +7 916 ...); "
        "empty: international format only",
    )
    erasure_sweep_seconds: float = Field(
        5.0,
        alias="SARAFAN_MEMBERS_ERASURE_SWEEP_SECONDS",
        gt=0,
        description="how often unfinished erasures (NATS was away, a consumer behind) are retried",
    )
    unsubscribe_secret: UnsubscribeSecret = Field(
        None,
        alias="SARAFAN_UNSUBSCRIBE_SECRET",
        description="verifies the unsubscribe links the notifier signs (the same secret there)",
    )


def build(settings: MembersSettings | None = None, clock: Clock = utcnow) -> FastAPI:
    return compose(settings, clock).app


def compose(
    settings: MembersSettings | None = None, clock: Clock = utcnow
) -> Composed[MemberStore]:
    """The service's composition root: every part made and wired once, here."""
    settings = settings or load_settings(MembersSettings, SERVICE)
    runtime = Runtime(SERVICE, settings, clock)
    store = MemberStore(runtime.db)
    runtime.init_hooks.append(store.ensure_indexes)
    eraser = Eraser(store, runtime.bus, runtime.relay.flush, settings.erasure_sweep_seconds)
    runtime.jobs.append(eraser.loop)
    runtime.bus.on_connected.append(eraser.wake)
    phone_region = settings.phone_region.strip().upper() or None
    secret = settings.unsubscribe_secret
    members = Members(
        use_cases=MemberUseCases(
            store,
            partial(MembersUnitOfWork, runtime.relay, store),
            runtime.clock,
            phone_region=phone_region,
            erased=eraser.kick,
        ),
        store=store,
        clock=runtime.clock,
        eraser=eraser,
        phone_region=phone_region,
        unsubscribe_secret=secret.get_secret_value() if secret else None,
        keys=runtime.keys,
        bus=runtime.bus,
        default_key_rate=settings.key_rate_per_minute,
        skipped=runtime.skipped,
        scrubber=runtime.scrubber,
    )
    app = create_app(
        runtime,
        [api.router, api_import.router, api_keys.router, unsubscribe.router],
        title="Sarafan members",
        description="Members who join voluntarily, their profiles, consent and referrals.",
        # The import takes a file; its own check answers 413 with the limit it has.
        larger_bodies={"/v1/members/import": importer.MAX_BYTES + 1},
        context=members,
    )
    return Composed(app, store, eraser)
