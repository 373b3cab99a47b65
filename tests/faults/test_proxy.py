"""A misbehaving network between the services and NATS: latency, dropped connections, and
connections half-opened then reset."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.faults.proxy import ProxyThread
from tests.faults.scenario import run_scenario
from tests.faults.stack import FaultStack, running_stack
from tests.helpers import wait_until


@pytest.fixture
def proxied(tmp_path) -> Iterator[tuple[FaultStack, ProxyThread]]:
    from sarafan.supervisor import StackConfig

    config = StackConfig.with_free_ports(tmp_path)
    with ProxyThread(config.nats_port) as proxy:
        stack = FaultStack(config, nats_url=proxy.url)
        with running_stack(tmp_path, _stack=stack) as s:
            yield s, proxy


async def test_latency_drops_and_half_open_connections_to_nats_lose_and_double_nothing(
    proxied: tuple[FaultStack, ProxyThread], record_property
) -> None:
    stack, proxy = proxied

    async def fault(flow) -> None:
        proxy.call(lambda: setattr(proxy.proxy, "latency", 0.05))
        await asyncio.sleep(1.5)
        before = proxy.call(lambda: proxy.proxy.connections)
        dropped = proxy.call(proxy.proxy.drop_all)
        assert dropped >= 4, f"only {dropped} connections went through the proxy"
        # Every service reconnects by itself through the (still slow) proxy.
        await wait_until(
            lambda: proxy.call(lambda: proxy.proxy.connections) >= before + 4,
            15,
            message="services did not reconnect after the drop",
        )
        await asyncio.sleep(1.0)
        # Half-open: the server side is gone, the client hears nothing; a middlebox resets the
        # client side a little later (nats-py alone would notice only after 2 missed pings).
        proxy.call(proxy.proxy.half_open_all)
        await asyncio.sleep(2.0)
        proxy.call(proxy.proxy.release_half_open)
        proxy.call(lambda: setattr(proxy.proxy, "latency", 0.0))

    await run_scenario(
        stack,
        "proxy",
        "NATS via proxy: 50 ms, drop, half-open",
        fault,
        record_property,
    )
