"""SIGKILL each service, nats-server and every nx-27017 mid-flow: nothing accepted is lost, nothing
is done twice, the DLQ holds only the poison, no consumer is stuck."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from sarafan.stack_config import mongo_name
from sarafan.supervisor import SERVICES
from shared.http import record_id
from shared.keys import BOOTSTRAP_ID
from tests.faults.flow import Ledger, join_body
from tests.faults.scenario import heal, kill_and_heal, run_scenario
from tests.faults.stack import TOKEN, FaultStack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    home: Path = tmp_path_factory.mktemp("faults-crashes")
    with running_stack(home) as s:
        yield s


async def test_each_service_sigkilled_in_turn_is_restarted_and_no_accepted_write_is_lost_or_doubled(
    stack: FaultStack, record_property
) -> None:
    # One flow, one converge: a consumer that dies holding messages gets them back only after
    # its ack_wait (60 s), so four separate runs would cost four minutes of waiting.
    async def fault(flow) -> None:
        for service in SERVICES:
            await kill_and_heal(stack, service, down=0.5)
            await asyncio.sleep(0.5)

    await run_scenario(
        stack, "kill services", "SIGKILL each service in turn", fault, record_property
    )


async def test_writes_are_accepted_while_nats_is_down_and_flow_once_it_is_back(
    stack: FaultStack, record_property
) -> None:
    async def fault(flow) -> None:
        await kill_and_heal(stack, "nats-server", down=3.0)

    figure = await run_scenario(
        stack, "kill nats", "SIGKILL nats-server (3 s down)", fault, record_property
    )
    assert figure.during_fault > 0, "no write was accepted while NATS was down"


async def test_mongodb_restart_mid_flow_loses_nothing(stack: FaultStack, record_property) -> None:
    async def fault(flow) -> None:
        # Every service's database at once, as a MongoDB restart would take them all.
        servers = [mongo_name(service) for service in SERVICES]
        for name in servers:
            stack.children[name].kill()
        await asyncio.sleep(1.0)
        await heal(stack, servers)

    await run_scenario(stack, "restart nx", "SIGKILL + restart nx-27017", fault, record_property)


async def test_a_key_left_in_progress_by_a_crash_can_be_retried(stack: FaultStack) -> None:
    """The state a SIGKILL mid-request leaves: the key recorded as started an hour ago."""
    body = json.dumps(join_body(Ledger(), "stuck")).encode()
    key = uuid.uuid4().hex
    mongo: AsyncMongoClient = AsyncMongoClient(stack.config.mongodb_url("members"))
    try:
        await mongo["sarafan_members"]["idempotency_keys"].insert_one(
            {
                "_id": record_id(BOOTSTRAP_ID, "/v1/members", key),
                "fingerprint": hashlib.sha256(body).hexdigest(),
                "state": "started",
                "created_at": datetime.now(UTC) - timedelta(hours=1),
            }
        )
    finally:
        await mongo.close()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        r = await http.post(
            stack.url("members") + "/v1/members",
            content=body,
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
    assert r.status_code == 201, f"{r.status_code} {r.text}"
