"""Members service composition root: settings, runtime, store, routes."""

from __future__ import annotations

from fastapi import FastAPI

from services.members import api
from services.members.store import MemberStore
from shared.events import MemberJoined, MemberLeft, MemberUpdated, ReferralMade
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings, load_settings

SERVICE = "members"


class MembersSettings(ServiceSettings):
    pass


def build(settings: MembersSettings | None = None) -> FastAPI:
    settings = settings or load_settings(MembersSettings, SERVICE)
    runtime = Runtime(SERVICE, settings)
    store = MemberStore(runtime.db)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.outbox(store.members)
    runtime.publishes += [MemberJoined, MemberUpdated, MemberLeft, ReferralMade]
    app = create_app(
        runtime, [api.router], title="Sarafan members",
        description="Members who join voluntarily, their profiles, consent and referrals.",
    )
    app.state.store = store
    return app
