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


class PortsTaken(RuntimeError):
    """`sarafan up` stopped because a port picked for it was taken before it bound it."""


def _ports_taken(up_log: str, home: Path) -> bool:
    if "ports already in use" in up_log:  # the supervisor's check before it starts anything
        return True
    child_logs = (home / "logs").glob("*.log")  # a child that lost the race to bind
    return any(
        "address already in use" in p.read_text(errors="replace").lower() for p in child_logs
    )


def _launch(tmp: Path, servers_only: bool) -> UpStack:
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
    log_path = tmp / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sarafan.cli",
                "up",
                *(["--servers-only"] if servers_only else []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return UpStack(proc, env, tmp / "home", log_path)


def _wait_ready(stack: UpStack, servers_only: bool) -> None:
    proc, log_path = stack.proc, stack.log

    def ready() -> bool:
        if proc.poll() is not None and _ports_taken(log_path.read_text(), stack.home):
            raise PortsTaken(log_path.read_text()[-3000:])
        assert proc.poll() is None, log_path.read_text()[-3000:]
        if servers_only:
            return "sarafan is up:" in log_path.read_text(errors="replace")
        return all(service_flowing(stack.url(n)) for n in SERVICES)

    wait_for(ready, 120, "sarafan up was not ready")


def _stop(stack: UpStack) -> None:
    proc = stack.proc
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


@contextmanager
def sarafan_up(tmp: Path, servers_only: bool = False, attempts: int = 3) -> Iterator[UpStack]:
    """`sarafan up` in `tmp/home`; with `servers_only`, nats-server and nx-27017 alone.

    A port free when picked may be taken before the stack binds it (outside the tests' port
    range, tests/conftest.py, by anything else on the machine): `sarafan up` then stops at
    once, and is started again in the same home on new ports, up to `attempts` times."""
    tmp.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        stack = _launch(tmp, servers_only)
        try:
            _wait_ready(stack, servers_only)
            break
        except PortsTaken:
            _stop(stack)
            if attempt == attempts:
                raise
        except BaseException:
            _stop(stack)
            raise
    try:
        yield stack
    finally:
        _stop(stack)
