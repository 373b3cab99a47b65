"""Server set-ups only the tests use, beside what `sarafan up` uses (sarafan/embedded.py):
a member of a nats-server cluster (the fault suite's 3-node cluster)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sarafan import embedded
from sarafan.embedded import LOCALHOST


@dataclass(frozen=True)
class NatsCluster:
    """Route settings for one member of a nats-server cluster (JetStream needs server_name)."""

    name: str
    server_name: str
    port: int
    routes: Sequence[int] = ()


def nats_config(
    port: int,
    http_port: int,
    store_dir: Path,
    *,
    cluster: NatsCluster | None = None,
    accounts: str | None = None,
) -> str:
    """`sarafan.embedded.nats_config`, and with `cluster` that member's name and routes."""
    text = embedded.nats_config(port, http_port, store_dir)
    if cluster is not None:
        routes = ", ".join(f'"nats-route://{LOCALHOST}:{p}"' for p in cluster.routes)
        text = "\n".join(
            [
                f"server_name: {json.dumps(cluster.server_name)}",
                text.rstrip("\n"),
                "cluster {",
                f"  name: {json.dumps(cluster.name)}",
                f"  listen: {LOCALHOST}:{cluster.port}",
                f"  routes: [{routes}]",
                "}",
            ]
        )
        text += "\n"
    if accounts:
        text += accounts.rstrip("\n") + "\n"
    return text
