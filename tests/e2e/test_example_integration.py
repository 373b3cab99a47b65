"""examples/crm_sync.py, an outside service, follows a stack started like `sarafan up`: as the
integration NATS user, with the published JSON Schemas, and within that user's permissions."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from sarafan.nats_auth import INTEGRATION_USER
from sarafan.supervisor import Stack, StackConfig
from tests.helpers import strong_token

ROOT = Path(__file__).resolve().parents[2]
TOKEN = strong_token()


@pytest.fixture
def stack(tmp_path):
    stack = Stack(
        StackConfig.with_free_ports(tmp_path / "home"),
        out=io.StringIO(),
        environ={**os.environ, "SARAFAN_API_TOKEN": TOKEN},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _campaign(now: datetime) -> dict:
    return {
        "name": "Bring a friend",
        "kind": "referral-drive",
        "starts_at": (now + timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=7)).isoformat(),
        "audience": {"regions": ["moscow"]},
        "scoring": {"referral-made": 10},
        "milestones": [20],
        "winners": 1,
        "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
    }


def test_sarafan_up_prints_how_an_integration_connects(stack):
    printed = stack.out.getvalue()
    assert f"{stack.config.nats_url} as user {INTEGRATION_USER}" in printed, printed
    assert "inbox prefix _INBOX_integration, durable consumers integration-example" in printed
    stored = json.loads((stack.config.home / "nats-users.json").read_text())
    assert stored[INTEGRATION_USER] == stack.nats_passwords[INTEGRATION_USER]


def test_example_integration_prints_a_join_and_a_campaign_end_it_validated(stack, tmp_path):
    schemas = tmp_path / "schemas"
    exported = subprocess.run(
        [sys.executable, "-m", "sarafan.cli", "schemas", str(schemas)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    out, err = tmp_path / "crm_sync.out", tmp_path / "crm_sync.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        example = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples/crm_sync.py"),
                *("--url", stack.config.nats_url, "--schemas", str(schemas)),
                *("--count", "2", "--timeout", "90"),
            ],
            env={**os.environ, "NATS_PASSWORD": stack.nats_passwords[INTEGRATION_USER]},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(headers=auth, timeout=15) as http:
            r = http.post(
                f"{stack.config.service_url('members')}/v1/members",
                json={
                    "display_name": "Vera",
                    "email": "vera@example.org",
                    "region": "moscow",
                    "locale": "en",
                    "consent": {"terms": True},
                },
            )
            assert r.status_code == 201, r.text
            member_id = r.json()["member_id"]
            campaigns = f"{stack.config.service_url('campaigns')}/v1/campaigns"
            r = http.post(campaigns, json=_campaign(datetime.now(UTC)))
            assert r.status_code == 201, r.text
            campaign_id = r.json()["campaign_id"]
            for step in ("start", "end"):
                r = http.post(f"{campaigns}/{campaign_id}/{step}", json={})
                assert r.status_code == 200, r.text
        # The example exits by itself after its two events (or fails the wait at its timeout).
        assert example.wait(120) == 0, err.read_text()
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()
    lines = out.read_text().splitlines()
    assert f"member-joined {member_id} 'Vera' in moscow" in lines, lines
    assert any(line.startswith(f"campaign-ended {campaign_id} ") for line in lines), lines
    assert not any(line.startswith("invalid") for line in lines), lines
    assert "crm-sync: 2 events" in err.read_text()
    # Everything the example did was within the integration user's permissions.
    log = stack.children["nats-server"].log_path.read_text()
    assert "Violation" not in log, log[-3000:]
