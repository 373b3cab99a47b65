"""The Prometheus Operator's PrometheusRule for Kubernetes, made from compose's alert rules.

`deploy/prometheus/rules/sarafan.yml` is the one list of alerts (promtool tests it). The same
rules run in k8s because the job names agree: the ServiceMonitor takes each Service's
`app.kubernetes.io/part-of` label (`sarafan`) as the job, the NATS chart's PodMonitor the pods'
`app.kubernetes.io/name` (`nats`), and both exporters prefix their metrics `nats_`.
`python -m sarafan.prometheus_rule` rewrites deploy/k8s/monitoring/prometheus-rule.yaml; a test
fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/rules/sarafan.yml"
TARGET = ROOT / "deploy/k8s/monitoring/prometheus-rule.yaml"
#: The label kube-prometheus-stack's Prometheus selects rules and monitors by (its release name).
RELEASE_LABEL = "kube-prometheus-stack"

HEADER = f"""\
# Generated from deploy/prometheus/rules/sarafan.yml by `python -m sarafan.prometheus_rule`:
# do not edit by hand. The alerts and their runbook: docs/operations.md, "Alerts and what to do".
# `release` is the label your Prometheus selects rules by (kube-prometheus-stack: its release).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sarafan
  labels:
    release: {RELEASE_LABEL}
spec:
"""


def prometheus_rule(rules: str) -> str:
    """The PrometheusRule manifest whose `spec` is the rules file (its comments kept, the
    file's own leading comment block left out)."""
    lines = rules.splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines.pop(0)
    return HEADER + "\n".join(f"  {line}" if line.strip() else "" for line in lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sarafan.prometheus_rule",
        description="Rewrite deploy/k8s/monitoring/prometheus-rule.yaml from the alert rules.",
    )
    parser.add_argument("--stdout", action="store_true", help="print it instead of writing")
    args = parser.parse_args(argv)
    text = prometheus_rule(RULES.read_text())
    if args.stdout:
        sys.stdout.write(text)
    else:
        TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
