"""`sarafan demo` plays a whole community against a stack started like `sarafan up`."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sarafan.supervisor import Stack, StackConfig
from tests.helpers import strong_token

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


def test_sarafan_demo_plays_a_community_and_reports_loyalty_winners_and_messages(stack):
    ports = {f"SARAFAN_{n.upper()}_PORT": str(p) for n, p in stack.config.service_ports.items()}
    env = {
        **os.environ,
        **ports,
        "SARAFAN_API_TOKEN": TOKEN,
        "SARAFAN_HOME": str(stack.config.home),
    }
    done = subprocess.run(
        [sys.executable, "-m", "sarafan.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    text = done.stdout
    assert text.count(" joined") >= 10
    assert "winner #1:" in text and "verify-draw" in text
    assert "Most engaged" in text and "Loyal pool" in text
    assert "welcome" in text  # what was sent, per member
