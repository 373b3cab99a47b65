"""The operator CLI and the embedded stack's NATS users, against a real `sarafan up`."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest

from sarafan.nats_auth import ADMIN_USER
from tests.integration.conftest import join_body
from tests.stack import SERVICES, UpStack, sarafan_up, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy/grafana/dashboards"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    with sarafan_up(tmp_path_factory.mktemp("ops-up")) as stack:
        yield stack


def _join(up: UpStack, **over) -> str:
    r = httpx.post(f"{up.url('members')}/v1/members", headers=up.auth, json=join_body(**over))
    assert r.status_code == 201, r.text
    return r.json()["member_id"]


def _passwords(up: UpStack) -> dict[str, str]:
    return json.loads((up.home / "nats-users.json").read_text())


async def _as(up: UpStack, user: str, errors: list[str] | None = None) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(
        up.nats_url, user=user, password=_passwords(up)[user], error_cb=on_error
    )


def test_sarafan_up_runs_every_service_as_its_own_nats_user(up):
    assert (up.home / "nats-users.json").stat().st_mode & 0o077 == 0
    assert (up.home / "nats.conf").stat().st_mode & 0o077 == 0
    mid = _join(up, display_name="Ira")

    def welcomed():
        r = httpx.get(f"{up.url('notifier')}/v1/members/{mid}/inbox", headers=up.auth)
        return r.status_code == 200 and r.json()["items"]

    wait_for(welcomed, 30, "no welcome through sarafan up with per-service users")
    nats_log = (up.home / "logs" / "nats-server.log").read_text()
    assert "Violation" not in nats_log, "a service hit its NATS permissions"

    async def refused() -> None:
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await asyncio.wait_for(
                nats.connect(up.nats_url, allow_reconnect=False, connect_timeout=2), 10
            )
        errors: list[str] = []
        members = await _as(up, "members", errors)
        try:
            await members.publish("campaigns.campaign-started.forged", b"{}")
            await members.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.05)
            assert any("campaigns.campaign-started.forged" in e for e in errors), errors
        finally:
            await members.close()

    asyncio.run(refused())


def test_events_tail_prints_events_as_they_are_published(up):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarafan.cli", "events", "tail", "-n", "1", "members.>"],
        env=up.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "following members.>" in proc.stderr.readline()
        mid = _join(up, display_name="Tanya")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "member-joined" in out and f"members.member-joined.{mid}" in out and "Tanya" in out


def test_dlq_list_shows_what_failed_and_replay_republishes_then_removes(up):
    async def poison() -> None:
        admin = await _as(up, ADMIN_USER)
        try:
            await admin.jetstream().publish(
                "members.member-joined.poison-1", b"{not json", stream="MEMBERS"
            )
        finally:
            await admin.close()

    asyncio.run(poison())

    def listed():
        done = up.cli("dlq", "list")
        assert done.returncode == 0, done.stderr
        return done.stdout.count("members.member-joined.poison-1") >= 3 and done.stdout

    out = wait_for(listed, 30, "the poison message was not dead-lettered by its 3 consumers")
    for consumer in ("engagement-members", "campaigns-members", "notifier-members"):
        assert consumer in out
    assert "invalid event" in out and "dead letter(s)" in out
    first = int(re.search(r"^(\d+)\s.*poison-1", out, re.M).group(1))

    done = up.cli("dlq", "replay", str(first))
    assert done.returncode == 0, done.stderr
    assert f"replayed {first} to members.member-joined.poison-1" in done.stdout

    async def replayed_copy():
        admin = await _as(up, ADMIN_USER)
        try:
            msg = await admin.jetstream().get_last_msg("MEMBERS", "members.member-joined.poison-1")
            return msg.headers, msg.data
        finally:
            await admin.close()

    headers, data = asyncio.run(replayed_copy())
    assert data == b"{not json" and headers["Sarafan-Replayed-From"] == f"DLQ:{first}"
    assert headers["Nats-Msg-Id"].startswith("replay:")
    ids = [int(m) for m in re.findall(r"^(\d+)\s", up.cli("dlq", "list").stdout, re.M)]
    assert first not in ids

    unknown = up.cli("dlq", "replay", "999999")
    assert unknown.returncode == 1 and "no dead letter with id 999999" in unknown.stderr
    every = up.cli("dlq", "replay", "--all")
    assert every.returncode == 0 and "dead letter(s) replayed" in every.stdout


def test_stats_prints_the_community_figures_and_every_consumer_pending(up):
    _join(up)
    done = up.cli("stats")
    assert done.returncode == 0, done.stderr
    assert "members_total" in done.stdout and "referral_join_share" in done.stdout
    assert "volunteer_hours_30d" in done.stdout and "fill_rate" in done.stdout
    for consumer in ("engagement-members", "campaigns-members", "notifier-members",
                     "activities-members"):  # fmt: skip
        assert re.search(rf"MEMBERS\s+{consumer}\s+\d+", done.stdout), done.stdout
    assert "Dead letters:" in done.stdout


def _exported(up: UpStack) -> set[str]:
    names: set[str] = set()
    for service in SERVICES:
        text = httpx.get(f"{up.url(service)}/metrics", timeout=5).text
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names


def test_every_dashboard_query_names_a_metric_the_running_services_export(up):
    exported = _exported(up)
    missing = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                used = set(re.findall(r"\b(sarafan_[a-z0-9_]+)", target["expr"]))
                assert used, f"{path.name}: panel {panel['title']!r} queries no sarafan_ metric"
                missing += [f"{path.name}/{panel['title']}: {m}" for m in used - exported]
    assert not missing, f"not exported by any running service: {missing}"
