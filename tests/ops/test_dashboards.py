"""Figures every replica reads from shared state are shown once per service, however many
replicas export them: each dashboard panel takes them `max by (service)` (or by consumer).

The community gauges (`sarafan_community_*`, refreshed by every replica from its service's
database), the outbox pending count (counted in that database) and a consumer's pending count
(read from JetStream) are the same figure on every replica; summing them would multiply them,
charting them bare draws one line per replica. promtool evaluates each panel's query over two
replicas' series here (tests/ops/test_operator_cli.py checks the metric names against a live
scrape).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.settings import DEFAULT_PORTS

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
RULES = ROOT / "deploy/prometheus/rules/sarafan.yml"
PROMTOOL = shutil.which("promtool")
SHARED_FIGURE = re.compile(
    r"sarafan_community_[a-z0-9_]+|sarafan_outbox_pending|sarafan_consumer_pending"
)
AGGREGATED = re.compile(r"max by \(([a-z_, ]+)\) \($")


def _targets() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            found += [(f"{path.name}/{panel['title']}", t["expr"]) for t in panel["targets"]]
    return found


def _unaggregated(expr: str) -> list[str]:
    """The shared figures of `expr` not directly inside `max by (service …)` or by consumer."""
    bare = []
    for match in SHARED_FIGURE.finditer(expr):
        before = expr[: match.start()]
        # Inside a range function, the aggregation wraps the function (`max by (…) (delta(`).
        before = re.sub(r"[a-z_]+\($", "", before)
        outer = AGGREGATED.search(before)
        by = {label.strip() for label in outer.group(1).split(",")} if outer else set()
        if not by & {"service", "consumer"}:
            bare.append(match.group(0))
    return bare


def test_every_panel_and_alert_takes_shared_figures_max_by_service():
    bare = [f"{where}: {m}" for where, expr in _targets() for m in _unaggregated(expr)]
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    bare += [f"alert {r['alert']}: {m}" for r in rules for m in _unaggregated(r["expr"])]
    assert not bare, f"one line (or alert) per replica: {bare}"
    # The check itself: a bare gauge and a sum are caught, the aggregated form passes.
    assert _unaggregated("sarafan_community_members_total") == ["sarafan_community_members_total"]
    assert _unaggregated("sum(sarafan_outbox_pending)") == ["sarafan_outbox_pending"]
    assert _unaggregated("max by (service) (sarafan_community_members_total)") == []


def _gauge_services() -> dict[str, str]:
    """Each community gauge → the service exporting it (from the services' own registries)."""
    owners = {}
    for name in DEFAULT_PORTS:
        module = importlib.import_module(f"services.{name}.app")
        app = module.build(getattr(module, f"{name.capitalize()}Settings")())
        for family in app.state.runtime.metrics.registry.collect():
            if family.name.startswith("sarafan_community_"):
                owners[family.name] = name
    return owners


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; `make test` installs it "
    "where apt-get is available)",
)
def test_each_community_panel_draws_one_line_per_service_with_two_replicas(tmp_path):
    owners = _gauge_services()
    series, cases = [], []
    for _where, expr in _targets():
        used = set(re.findall(r"sarafan_community_[a-z0-9_]+", expr))
        if not used:
            continue
        (gauge,) = used
        service = owners[gauge]
        for replica, value in (("a", 10), ("b", 11)):
            entry = {
                "series": f'{gauge}{{service="{service}", instance="{service}-{replica}"}}',
                "values": f"{value}x5",
            }
            if entry not in series:
                series.append(entry)
        cases.append(
            {
                "expr": expr,
                "eval_time": "2m",
                "exp_samples": [{"labels": f'{{service="{service}"}}', "value": 11}],
            }
        )
    assert cases, "no community panel found"
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "panels_test.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
            }
        )
    )
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "panels_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
