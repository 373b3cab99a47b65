"""Integration harness: each service runs in-process against real NATS and MongoDB."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from sarafan.embedded import LOCALHOST, free_port, nats_child
from shared.service import Composed, Runtime
from tests.conftest import EmbeddedServer, started_on_free_ports
from tests.contract import Conformance
from tests.helpers import MovableClock, strong_token, wait_until

TOKEN = strong_token()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def nats_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[EmbeddedServer]:
    """A fresh nats-server per test: streams, consumers and DLQ start empty.

    (Overrides the session-wide one; with NATS_URL set the external server is shared.)
    """
    if os.environ.get("NATS_URL") or os.environ.get("SARAFAN_TEST_DOCKER") == "1":
        pytest.skip("per-test NATS needs the embedded nats-server")
    data_dir = tmp_path_factory.mktemp("nats-test")

    def make() -> EmbeddedServer:
        port = free_port()
        return EmbeddedServer(nats_child(data_dir, port, free_port()), f"nats://{LOCALHOST}:{port}")

    server = started_on_free_ports(make)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_test_url(nats_server: EmbeddedServer) -> str:
    return nats_server.url


@pytest.fixture
def db_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Running:
    app: FastAPI
    http: httpx.AsyncClient
    #: The service's one clock, which the test moves (tests/helpers.py MovableClock).
    clock: MovableClock

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    #: The parts the composition root made (shared.service.Composed): store, jobs.
    parts: Composed[Any]

    @property
    def store(self) -> Any:
        return self.parts.store

    @property
    def jobs(self) -> Any:
        return self.parts.jobs


@asynccontextmanager
async def run_service(
    compose: Callable[..., Composed[Any]],
    settings_cls: type,
    *,
    nats_url: str,
    mongo_url: str,
    database: str,
    wait_ready: bool = True,
    clock: MovableClock | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    settings = settings_cls(
        NATS_URL=nats_url,
        MONGODB_URL=mongo_url,
        SARAFAN_MONGODB_DATABASE=database,
        SARAFAN_API_TOKEN=TOKEN,
        SARAFAN_OUTBOX_SWEEP_SECONDS=0.5,
        SARAFAN_RETRY_BACKOFF_SECONDS=0.1,
        SARAFAN_MAX_DELIVER=3,
        **overrides,
    )
    clock = clock or MovableClock()
    parts = compose(settings, clock=clock)
    app = parts.app
    # Every answer a test gets is checked against the service's OpenAPI document: a route
    # answering what its document does not say fails the test (tests/contract.py).
    conformance = Conformance(app.openapi())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://service",
            headers=AUTH,
            event_hooks={"response": [conformance.on_response]},
        ) as client:
            running = Running(app, client, clock, parts)
            if wait_ready:

                async def ready() -> bool:
                    # Ready, and the events flow (readiness does not wait for NATS).
                    r = await client.get("/readyz")
                    return r.status_code == 200 and all(r.json()["checks"].values())

                await wait_until(ready, timeout=20, message=f"{database} never became ready")
            yield running


@pytest.fixture
def services(nats_test_url: str, mongo_url: str, db_prefix: str) -> Callable[..., Any]:
    """`async with services("members", "notifier") as s:` runs them against fresh NATS."""

    @asynccontextmanager
    async def start(*names: str, **kw: Any) -> AsyncIterator[dict[str, Running]]:
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            running: dict[str, Running] = {}
            for name in names:
                module = __import__(f"services.{name}.app", fromlist=["compose"])
                settings_cls = getattr(module, f"{name.capitalize()}Settings")
                running[name] = await stack.enter_async_context(
                    run_service(
                        module.compose,
                        settings_cls,
                        nats_url=nats_test_url,
                        mongo_url=mongo_url,
                        database=f"{db_prefix}_{name}",
                        **kw,
                    )
                )
            yield running

    return start


@pytest.fixture
async def nc(nats_test_url: str) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_test_url)
    try:
        yield client
    finally:
        await client.close()


def join_body(**over: Any) -> dict[str, Any]:
    body = {
        "display_name": "Anna",
        "email": f"anna.{uuid.uuid4().hex[:8]}@example.org",
        "region": "moscow",
        "roles": ["volunteer"],
        "interests": ["ecology"],
        "skills": ["driving"],
        "locale": "ru",
        "consent": {"terms": True, "marketing": True},
    }
    body.update(over)
    return body


@pytest.fixture
async def activities(services: Callable[..., Any], nc: nats.NATS) -> AsyncIterator[Running]:
    """The activities service alone, with the members' stream it reads declared (tests publish
    member events on it as the members service would)."""
    from tests.integration.activities_support import declare_streams

    await declare_streams(nc, "MEMBERS")
    async with services("activities") as s:
        yield s["activities"]
