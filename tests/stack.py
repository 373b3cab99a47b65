"""`sarafan up` as a subprocess on free ports in a temporary home, as an operator runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarafan.embedded import free_port, free_ports_in_a_row, service_flowing
from shared.settings import DEFAULT_PORTS
from tests.helpers import strong_token

SERVICES = tuple(DEFAULT_PORTS)
TOKEN = strong_token()


@dataclass
class UpStack:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]  # what an operator's shell would have: SARAFAN_HOME and the ports
    home: Path
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'SARAFAN_{service.upper()}_PORT']}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.env['SARAFAN_NATS_PORT']}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `sarafan ARGS` as the operator would, from the same shell environment."""
        return subprocess.run(
            [sys.executable, "-m", "sarafan.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


@contextmanager
def sarafan_up(tmp: Path, servers_only: bool = False) -> Iterator[UpStack]:
    """`sarafan up` in `tmp/home`; with `servers_only`, nats-server and nx-27017 alone."""
    ports = {
        "SARAFAN_NATS_PORT": free_port(),
        "SARAFAN_NATS_HTTP_PORT": free_port(),
        "SARAFAN_MONGO_PORT": free_ports_in_a_row(len(SERVICES)),  # one nx-27017 per service
        **{f"SARAFAN_{name.upper()}_PORT": free_port() for name in SERVICES},
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "MONGODB_"))},
        **{k: str(v) for k, v in ports.items()},
        "SARAFAN_HOME": str(tmp / "home"),
        "SARAFAN_API_TOKEN": TOKEN,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "up.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarafan.cli", "up", *(["--servers-only"] if servers_only else [])],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = UpStack(proc, env, tmp / "home", log_path)

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        if servers_only:
            return "sarafan is up:" in log_path.read_text(errors="replace")
        return all(service_flowing(stack.url(n)) for n in SERVICES)

    try:
        wait_for(ready, 120, "sarafan up was not ready")
        yield stack
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The supervisor stops its children; make sure by their recorded pids, never by name.
        for pidfile in (stack.home / "pids").glob("*.pid"):
            pid = int(pidfile.read_text().strip() or 0)
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
