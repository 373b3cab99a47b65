"""`sarafan up` as a subprocess: every service ready, a join becomes a welcome, crashes heal,
SIGTERM stops every child."""

from __future__ import annotations

import os
import signal
import time

import httpx

from sarafan.embedded import service_flowing
from tests.stack import SERVICES, pid_alive, sarafan_up, wait_for


def test_sarafan_up_serves_a_join_heals_a_crash_and_stops_every_child(tmp_path):
    with sarafan_up(tmp_path) as stack:
        printed = wait_for(
            lambda: "sarafan is up" in stack.log.read_text() and stack.log.read_text(),
            30,
            "no summary printed",
        )
        for name in SERVICES:
            assert stack.url(name) in printed  # the URLs are printed for the operator

        r = httpx.post(
            f"{stack.url('members')}/v1/members",
            headers=stack.auth,
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
            inbox = f"{stack.url('notifier')}/v1/members/{mid}/inbox"
            return httpx.get(inbox, headers=stack.auth).json()["items"]

        items = wait_for(welcomed, 30, "no welcome in the inbox")
        print(f"join → welcome through sarafan up: {time.monotonic() - started:.3f}s")
        assert items[0]["template"] == "welcome" and "Ann" in items[0]["title"]

        def pids() -> dict[str, int]:
            return {p.stem: int(p.read_text()) for p in (stack.home / "pids").glob("*.pid")}

        servers = {"nats-server", *(f"nx-27017-{name}" for name in SERVICES)}
        assert servers | set(SERVICES) <= set(pids())
        # A crash (SIGKILL) is healed by the supervisor, as `restart: unless-stopped` would.
        os.kill(pids()["engagement"], signal.SIGKILL)
        wait_for(lambda: "restarted engagement" in stack.log.read_text(), 30, "no restart")

        wait_for(
            lambda: all(service_flowing(stack.url(n)) for n in SERVICES),
            60,
            "engagement did not come back",
        )
        children = pids()
        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(60) == 0
        for name, pid in children.items():
            assert not pid_alive(pid), f"{name} (pid {pid}) outlived sarafan up"
