"""`sarafan demo` plays a whole community against a stack started like `sarafan up`."""

from __future__ import annotations

import io
import os

import pytest

from shared.demo import run_demo
from shared.supervisor import Stack, StackConfig


@pytest.fixture
def stack(tmp_path):
    stack = Stack(
        StackConfig.with_free_ports(tmp_path / "home"),
        out=io.StringIO(),
        environ={**os.environ, "SARAFAN_API_TOKEN": "demo-token"},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_demo_plays_a_community_and_reports_loyalty_winners_and_messages(stack):
    lines: list[str] = []
    urls = {name: stack.config.service_url(name) for name in stack.services}
    demo = run_demo("demo-token", urls, say=lines.append)
    text = "\n".join(lines)
    print(text)
    assert len(demo.members) == 10
    assert "winner #1:" in text
    assert "verify-draw" in text
    assert "welcome" in text and "Most engaged" in text
