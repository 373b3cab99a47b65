"""The stack as `sarafan up` runs it (separate processes), with the knobs fault tests need."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from sarafan.embedded import LOCALHOST, Child, find_executable, free_port, http_ok, tcp_accepts
from sarafan.nats_auth import ADMIN_USER, nats_conf
from sarafan.supervisor import SERVICES, Stack, StackConfig
from tests.helpers import strong_token
from tests.servers import NatsCluster, nats_config
from tests.stack import pid_alive

TOKEN = strong_token()
READY_TIMEOUT = 60.0
#: Fast consumer retries and outbox sweeps keep convergence inside the suite's time bound.
BASE_ENV = {
    "SARAFAN_API_TOKEN": TOKEN,
    "SARAFAN_OUTBOX_SWEEP_SECONDS": "1",
    "SARAFAN_RETRY_BACKOFF_SECONDS": "0.2",
    # What a crash or a lost ack holds back comes again after ack_wait (30 s by default).
    "SARAFAN_ACK_WAIT_SECONDS": "5",
    "SARAFAN_NATS_PING_SECONDS": "2",
    "SARAFAN_LOG_LEVEL": "WARNING",
}


class FaultStack(Stack):
    """`sarafan.supervisor.Stack` whose services get extra settings and, optionally, another
    NATS: a URL list through a proxy, or a 3-node cluster started in place of nats-server."""

    def __init__(
        self,
        config: StackConfig,
        *,
        extra_env: Mapping[str, str] | None = None,
        nats_url: str | None = None,
        cluster_size: int = 0,
        services: Sequence[str] = SERVICES,
    ) -> None:
        super().__init__(
            config,
            services=services,
            environ={"SARAFAN_API_TOKEN": TOKEN},
            out=io.StringIO(),
            grace=5,
        )
        self.extra_env = {**BASE_ENV, **(extra_env or {})}
        self.cluster_size = cluster_size
        self.nodes: list[Child] = []
        self.client_ports: list[int] = []
        if cluster_size:
            self.client_ports = [free_port() for _ in range(cluster_size)]
            # One seed URL: the client learns the other nodes from the server (INFO connect_urls)
            # and fails over to them. A comma-separated NATS_URL is not supported by the kernel
            # (see test_nats_url_may_list_several_servers).
            nats_url = f"nats://{LOCALHOST}:{self.client_ports[0]}"
        self.nats_url = nats_url or config.nats_url

    @property
    def admin_password(self) -> str:
        return self.nats_passwords[ADMIN_USER]

    def admin_urls(self) -> list[str]:
        """Where a test's own NATS client connects: straight to the server(s), never the proxy."""
        if self.client_ports:
            return [f"nats://{LOCALHOST}:{p}" for p in self.client_ports]
        return [self.config.nats_url]

    def url(self, service: str) -> str:
        return self.config.service_url(service)

    def _service_child(self, name: str) -> Child:
        child = super()._service_child(name)
        child.env = {**child.env, **self.extra_env, "NATS_URL": self.nats_url}
        return child

    def _start_and_wait(self, children: list[Child], timeout: float) -> None:
        if self.cluster_size and any(c.name == "nats-server" for c in children):
            # The single nats-server is replaced by the cluster nodes, supervised like it.
            del self.children["nats-server"]
            self.nodes = self._cluster_nodes()
            for node in self.nodes:
                node.die_with_parent = True
                self.children[node.name] = node
            children = [c for c in children if c.name != "nats-server"] + self.nodes
        super()._start_and_wait(children, timeout)

    def _cluster_nodes(self) -> list[Child]:
        routes = [free_port() for _ in range(self.cluster_size)]
        accounts = nats_conf(self.nats_passwords)
        nodes = []
        for i, (port, route) in enumerate(zip(self.client_ports, routes, strict=True)):
            name = f"nats-{i + 1}"
            home = self.config.home / name
            home.mkdir(parents=True, exist_ok=True)
            http_port = free_port()
            cluster = NatsCluster("faults", name, route, routes=[r for r in routes if r != route])
            text = nats_config(
                port, http_port, home / "jetstream", cluster=cluster, accounts=accounts
            )
            config = home / "nats.conf"
            config.write_text(text)
            os.chmod(config, 0o600)
            health = f"http://{LOCALHOST}:{http_port}/healthz?js-enabled-only=true"
            nodes.append(
                Child(
                    name=name,
                    argv=[find_executable("nats-server"), "-c", str(config)],
                    log_path=self.logs_dir / f"{name}.log",
                    ready_check=lambda p=port, h=health: tcp_accepts(LOCALHOST, p) and http_ok(h),
                )
            )
        return nodes

    def all_pids(self) -> dict[str, int]:
        return {n: c.pid for n, c in self.children.items() if c.pid is not None}


@contextmanager
def running_stack(
    home: Path, _stack: FaultStack | None = None, **options: object
) -> Iterator[FaultStack]:
    """Start the whole stack (or `_stack`), yield it, stop it; no child outlives it."""
    stack = _stack or FaultStack(StackConfig.with_free_ports(home), **options)  # type: ignore[arg-type]
    pids: set[int] = set()
    try:
        stack.start()
        yield stack
    finally:
        pids |= set(stack.all_pids().values())
        stack.stop()
        left = [pid for pid in pids if pid_alive(pid)]
        assert not left, f"children outlived the stack: {left}"
