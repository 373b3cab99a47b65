"""A 3-node NATS cluster with R3 streams: one node killed mid-flow and brought back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sarafan.embedded import LOCALHOST, free_port
from tests.faults.scenario import kill_and_heal, run_scenario
from tests.faults.stack import FaultStack, running_stack


@pytest.fixture
def cluster(tmp_path) -> Iterator[FaultStack]:
    with running_stack(tmp_path, cluster_size=3, extra_env={"SARAFAN_STREAM_REPLICAS": "3"}) as s:
        yield s


async def test_a_cluster_node_killed_mid_flow_loses_nothing_with_r3_streams(
    cluster: FaultStack, record_property
) -> None:
    from tests.faults.invariants import admin_nats

    nc = await admin_nats(cluster)
    try:
        info = await nc.jetstream().stream_info("MEMBERS")
        assert info.config.num_replicas == 3
        assert len(info.cluster.replicas or []) == 2, "MEMBERS is not replicated on 3 nodes"
    finally:
        await nc.close()

    async def fault(flow) -> None:
        # nats-2 is not the services' seed URL: their connections stay up, but the node may
        # lead streams or consumers, which must then elect a new leader among the other two.
        await kill_and_heal(cluster, "nats-2", down=3.0)

    await run_scenario(
        cluster, "cluster node", "SIGKILL 1 of 3 NATS nodes (R3)", fault, record_property
    )


def test_nats_url_may_list_several_servers(tmp_path) -> None:
    """NATS_URL='nats://<down>,nats://<up>' must connect to the server that is up."""
    dead = f"nats://{LOCALHOST}:{free_port()}"
    with running_stack(tmp_path, services=("members",)) as stack:
        child = stack.children["members"]
        child.stop()
        child.env = {**child.env, "NATS_URL": f"{dead},{stack.config.nats_url}"}
        child.start()
        child.wait_ready(15)  # /readyz says 200 only once NATS is connected
