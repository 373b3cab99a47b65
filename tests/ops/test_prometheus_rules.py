"""Prometheus config and alert rules: promtool checks them and runs their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy/prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; `make test` installs it "
    "where apt-get is available)",
)


def _alerts() -> list[str]:
    rules = yaml.safe_load((PROM / "rules/sarafan.yml").read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def _promtool(*args: str) -> str:
    done = subprocess.run(
        [PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config():
    assert f"SUCCESS: {len(_alerts())} rules found" in _promtool(
        "check", "rules", "rules/sarafan.yml"
    )
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_every_alert_rule_passes_its_promtool_unit_tests():
    assert "SUCCESS" in _promtool("test", "rules", "tests/sarafan_test.yml")


def test_every_alert_the_issue_asks_for_exists_has_a_unit_test_and_a_runbook_entry():
    alerts = _alerts()
    for wanted in (
        "SarafanServiceDown",
        "SarafanConsumerLagGrowing",
        "SarafanConsumerStalled",
        "SarafanDlqGrowing",
        "SarafanHandlerErrorRatio",
        "SarafanHandlerLatencyP99",
        "SarafanOutboxBacklog",
        "SarafanNotificationFailureRatio",
    ):
        assert wanted in alerts
    tests = yaml.safe_load((PROM / "tests/sarafan_test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])}
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    runbook = (ROOT / "docs/operations.md").read_text()
    for alert in alerts:
        assert alert in tested and alert in fired, f"{alert} has no test where it fires"
        assert f"`{alert}`" in runbook, f"{alert} has no runbook entry in docs/operations.md"
