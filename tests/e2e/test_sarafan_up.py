"""`sarafan up` as a subprocess: all four services ready, a join becomes a welcome, crashes heal,
SIGTERM stops every child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.embedded import free_port
from shared.settings import DEFAULT_PORTS

SERVICES = tuple(DEFAULT_PORTS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; only the supervisor could reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


@pytest.fixture
def stack(tmp_path):
    ports = {
        "SARAFAN_NATS_PORT": free_port(),
        "SARAFAN_NATS_HTTP_PORT": free_port(),
        "SARAFAN_MONGO_PORT": free_port(),
        **{f"SARAFAN_{name.upper()}_PORT": free_port() for name in SERVICES},
    }
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "SARAFAN_HOME": str(tmp_path / "home"),
        "SARAFAN_API_TOKEN": "e2e-token",
    }
    env.pop("NATS_URL", None)
    env.pop("MONGODB_URL", None)
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    home = tmp_path / "home"
    try:
        yield proc, ports, home, tmp_path / "up.log"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever happened, no child may outlive the test.
        for pidfile in (home / "pids").glob("*.pid"):
            pid = int(pidfile.read_text().strip() or 0)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_sarafan_up_serves_a_join_heals_a_crash_and_stops_every_child(stack):
    proc, ports, home, log = stack
    urls = {name: f"http://127.0.0.1:{ports[f'SARAFAN_{name.upper()}_PORT']}" for name in SERVICES}
    auth = {"Authorization": "Bearer e2e-token"}

    def all_ready():
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return all(
                httpx.get(f"{u}/readyz", timeout=2).status_code == 200 for u in urls.values()
            )
        except httpx.HTTPError:
            return False

    _wait(all_ready, 120, "all four services were not ready")
    printed = _wait(
        lambda: "sarafan is up" in log.read_text() and log.read_text(), 30, "no summary printed"
    )
    for url in urls.values():
        assert url in printed  # the URLs are printed for the operator

    r = httpx.post(
        f"{urls['members']}/v1/members",
        headers=auth,
        json={
            "display_name": "Ann",
            "email": "ann@example.org",
            "region": "kazan",
            "locale": "en",
            "consent": {"terms": True},
        },
    )
    assert r.status_code == 201, r.text
    mid = r.json()["member_id"]
    started = time.monotonic()

    def welcomed():
        items = httpx.get(f"{urls['notifier']}/v1/members/{mid}/inbox", headers=auth).json()
        return items["items"]

    items = _wait(welcomed, 30, "no welcome in the inbox")
    print(f"join → welcome through sarafan up: {time.monotonic() - started:.3f}s")
    assert items[0]["template"] == "welcome" and "Ann" in items[0]["title"]

    pids = {p.stem: int(p.read_text()) for p in (home / "pids").glob("*.pid")}
    assert {"nats-server", "nx-27017", *SERVICES} <= set(pids)
    # A crash (SIGKILL) is healed by the supervisor, as `restart: unless-stopped` would.
    os.kill(pids["engagement"], signal.SIGKILL)
    _wait(lambda: "restarted engagement" in log.read_text(), 30, "engagement not restarted")
    _wait(all_ready, 60, "engagement did not come back")

    pids = {p.stem: int(p.read_text()) for p in (home / "pids").glob("*.pid")}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) outlived sarafan up"
