"""One fault scenario: a flow running, the fault, the flow running on, then every invariant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.faults.figures import Figure, record
from tests.faults.flow import Flow
from tests.faults.invariants import admin_nats, converge, dlq_last_seq, publish_poison
from tests.faults.stack import READY_TIMEOUT, FaultStack

#: How long the flow runs before and after the fault (the fault itself decides its length).
FLOW_BEFORE = 1.0
FLOW_AFTER = 1.5


async def heal(stack: FaultStack, names: list[str], timeout: float = READY_TIMEOUT) -> None:
    """The supervisor's restart pass (`Stack.poll_once`, with its backoff) from this thread,
    until the named children run and are ready again; the flow keeps going meanwhile."""
    deadline = time.monotonic() + timeout
    while not all(stack.children[n].alive() for n in names):
        assert time.monotonic() < deadline, f"{names} not restarted within {timeout}s"
        stack.poll_once()
        await asyncio.sleep(0.05)
    for name in names:
        child = stack.children[name]
        while not await asyncio.to_thread(child.ready_check or child.alive):
            assert child.alive(), f"{name} exited again; see {child.log_path}"
            assert time.monotonic() < deadline, f"{name} not ready within {timeout}s"
            await asyncio.sleep(0.1)


async def kill_and_heal(stack: FaultStack, name: str, down: float) -> None:
    """SIGKILL a child, leave it down `down` seconds under the flow, let the supervisor heal it."""
    stack.children[name].kill()
    await asyncio.sleep(down)
    await heal(stack, [name])


async def run_scenario(
    stack: FaultStack,
    test: str,
    fault_name: str,
    fault: Callable[[Flow], Awaitable[Any]],
    record_property: Any = None,
) -> Figure:
    """Seed, poison, flow, fault, flow, converge; the figures of the run."""
    nc = await admin_nats(stack)
    flow = Flow(stack)
    try:
        await flow.setup()
        dlq_after = await dlq_last_seq(nc)
        await publish_poison(nc, flow.ledger)
        flow.start()
        await asyncio.sleep(FLOW_BEFORE)
        started = time.monotonic()
        await fault(flow)
        ended = time.monotonic()
        await asyncio.sleep(FLOW_AFTER)
        await flow.stop()
        converged = await converge(stack, flow.client, nc, flow.ledger, dlq_after)
        ledger = flow.ledger
        assert ledger.accepted > 20, f"the flow barely ran: {ledger.accepted} writes accepted"
        return record(
            test,
            fault_name,
            ledger,
            ledger.accepted_between(started, ended),
            ended - started,
            converged,
            record_property,
        )
    finally:
        if not flow.stopped:
            await flow.stop()
        await flow.client.close()
        await nc.close()
