"""The probes against real servers: readiness follows what a client can be served (MongoDB,
start-up, the API keys; not NATS), liveness follows the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import APIRouter

from sarafan.embedded import LOCALHOST, free_port
from services.members.app import MembersSettings
from services.members.app import build as build_members
from shared.service import Runtime, create_app
from shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.integration.conftest import AUTH, TOKEN, join_body
from tests.stack import wait_for

#: A key of the right form that no bucket holds.
UNKNOWN_KEY = {"Authorization": "Bearer sk_abcdefghijkl_" + "x" * 43}


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, bool]]:
    r = await http.get("/readyz")
    return r.status_code, r.json()["checks"]


async def test_readyz_stays_200_while_nats_is_down_and_a_write_succeeds(services, nats_server):
    async with services("members") as s:
        http = s["members"].http
        nats_server.stop()
        await wait_until(lambda: not s["members"].runtime.bus.connected, timeout=20)
        status, checks = await readiness(http)
        # NATS is reported, and does not decide: the write below waits in the outbox.
        assert status == 200, checks
        assert checks["nats"] is False and checks["mongodb"] and checks["api_keys"]
        r = await http.post("/v1/members", json=join_body())
        assert r.status_code == 201, r.text
        doc = await s["members"].store.members.find_one({"_id": r.json()["member_id"]})
        assert doc["outbox_pending"] == 1
        nats_server.start()

        async def flowing() -> bool:
            status, checks = await readiness(http)
            return status == 200 and all(checks.values())

        await wait_until(flowing, timeout=30, message="NATS came back but readiness did not say")


async def test_readyz_is_503_while_mongodb_is_unreachable_and_200_once_it_is_back(
    services, mongo_server
):
    async with services("members") as s:
        http = s["members"].http
        mongo_server.stop()
        try:
            started = time.monotonic()
            status, checks = await readiness(http)
            # Answered within the probes' 3 s timeout, though the driver would wait 5 s.
            assert time.monotonic() - started < 3
            assert status == 503 and checks["mongodb"] is False and checks["nats"] is True
        finally:
            mongo_server.start()

        async def ready() -> bool:
            return (await readiness(http))[0] == 200

        await wait_until(ready, timeout=30, message="MongoDB came back but readiness did not say")


async def test_readyz_is_503_until_start_up_has_initialised_the_storage(
    nats_test_url, mongo_url, db_prefix
):
    settings = MembersSettings(
        NATS_URL=nats_test_url,
        MONGODB_URL=mongo_url,
        SARAFAN_MONGODB_DATABASE=f"{db_prefix}_members",
        SARAFAN_API_TOKEN=TOKEN,
    )
    app = build_members(settings)
    storage_ready = asyncio.Event()
    app.state.runtime.init_hooks.append(storage_ready.wait)  # an index build that takes long
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://members") as http:
            status, checks = await readiness(http)
            assert status == 503
            assert checks["initialised"] is False and checks["mongodb"] is True
            storage_ready.set()

            async def ready() -> bool:
                return (await readiness(http))[0] == 200

            await wait_until(ready, timeout=20, message="start-up finished, still not ready")


async def test_a_service_that_never_reached_nats_is_not_ready_and_asks_keys_to_retry(
    services, nats_server
):
    nats_server.stop()
    async with services("members", wait_ready=False) as s:
        http = s["members"].http
        await wait_until(lambda: s["members"].runtime.initialised.is_set(), timeout=20)
        status, checks = await readiness(http)
        # Its storage is ready, but no key but the bootstrap one can be judged yet.
        assert status == 503 and checks["api_keys"] is False and checks["initialised"]
        r = await http.get("/v1/members", headers=UNKNOWN_KEY)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        assert r.headers["Retry-After"]
        # The operator's key is known without the bucket: its writes wait in the outbox.
        assert (await http.post("/v1/members", json=join_body(), headers=AUTH)).status_code == 201
        nats_server.start()

        async def ready() -> bool:
            return (await readiness(http))[0] == 200

        await wait_until(ready, timeout=30, message="NATS came, the keys were never read")
        r = await http.get("/v1/members", headers=UNKNOWN_KEY)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


# -- liveness --------------------------------------------------------------------------------


@contextmanager
def serving(app: object) -> Iterator[str]:
    """`app` served by uvicorn on its own event loop in a thread, as `sarafan run` serves it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOCALHOST, port=port, log_config=None, access_log=False)  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 20, "uvicorn did not start")
        assert server.started, "uvicorn stopped at start-up"
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_a_blocked_event_loop_fails_the_liveness_probe_and_the_watchdog_says_where(
    nats_test_url, mongo_url, db_prefix, caplog: pytest.LogCaptureFixture
):
    blocking = threading.Event()
    router = APIRouter()

    @router.get("/block-the-loop")
    async def block_the_loop() -> dict[str, str]:
        blocking.set()
        time.sleep(4)  # noqa: ASYNC251 -- the bug liveness catches: nothing else runs meanwhile
        return {"status": "done"}

    settings = ServiceSettings(
        NATS_URL=nats_test_url,
        MONGODB_URL=mongo_url,
        SARAFAN_MONGODB_DATABASE=f"{db_prefix}_{uuid.uuid4().hex[:6]}",
        SARAFAN_API_TOKEN=TOKEN,
    )
    runtime = Runtime("members", settings)
    runtime.heartbeat.stale_after = 1.0
    caplog.set_level(logging.WARNING, logger="sarafan.liveness")
    with serving(create_app(runtime, [router], title="t", description="t")) as url:
        assert httpx.get(f"{url}/healthz", timeout=3).status_code == 200
        blocker = threading.Thread(target=httpx.get, args=(f"{url}/block-the-loop",))
        blocker.start()
        assert blocking.wait(10)
        # What a probe with a timeout sees: no answer in time, which counts as a failure.
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{url}/healthz", timeout=1)
        # Meanwhile the watchdog thread names the stall and where the loop is stuck.
        wait_for(lambda: "has not run" in caplog.text, 5, "the watchdog reported no stall")
        assert "block_the_loop" in caplog.text and "time.sleep(4)" in caplog.text
        blocker.join(20)
        # Unblocked, the loop answers again and the watchdog says so.
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=3).status_code == 200,
            10,
            "liveness did not come back",
        )
        wait_for(lambda: "runs again" in caplog.text, 5, "the watchdog missed the loop's return")
