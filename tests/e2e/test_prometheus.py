"""A real Prometheus (Debian package) scrapes a running `sarafan up` with deploy/'s rules."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sarafan.embedded import free_port
from tests.stack import SERVICES, sarafan_up, wait_for

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed (Debian package `prometheus`; `make test` installs it "
    "where apt-get is available)",
)
def test_prometheus_scrapes_every_service_of_sarafan_up_and_loads_the_alert_rules(tmp_path):
    with sarafan_up(tmp_path) as up:
        # The compose scrape config, pointed at this stack's ports instead of compose hosts.
        config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(ROOT / "deploy/prometheus/rules/*.yml")]
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sarafan"]
        for static in job["static_configs"]:
            service = static["labels"]["service"]
            static["targets"] = [up.url(service).removeprefix("http://")]
        config["scrape_configs"] = [job]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            r = httpx.post(
                f"{up.url('members')}/v1/members",
                headers=up.auth,
                json={
                    "display_name": "Lena",
                    "email": "lena@example.org",
                    "region": "kazan",
                    "consent": {"terms": True},
                },
            )
            assert r.status_code == 201, r.text

            def query(expr: str) -> list[dict]:
                try:
                    body = httpx.get(f"{api}/query", params={"query": expr}, timeout=3).json()
                except (httpx.HTTPError, ValueError):
                    return []
                return body["data"]["result"] if body.get("status") == "success" else []

            def all_up():
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                result = query('up{job="sarafan"} == 1')
                return {s["metric"]["service"] for s in result} == set(SERVICES) and result

            started = time.monotonic()
            wait_for(all_up, 60, "Prometheus did not see every service up")
            print(f"every target up in Prometheus after {time.monotonic() - started:.1f}s")
            targets = httpx.get(f"{api}/targets").json()["data"]["activeTargets"]
            assert {t["labels"]["service"] for t in targets if t["health"] == "up"} == set(SERVICES)

            def series():
                names = httpx.get(f"{api}/label/__name__/values").json()["data"]
                return {n for n in names if n.startswith("sarafan_")}

            wanted = {
                "sarafan_events_published_total",
                "sarafan_events_consumed_total",
                "sarafan_handler_seconds_bucket",
                "sarafan_outbox_pending",
                "sarafan_consumer_pending",
                "sarafan_http_requests_total",
                "sarafan_notifications_total",
                "sarafan_community_members_total",
            }
            wait_for(lambda: wanted <= series(), 60, f"missing series: {wanted - series()}")
            by_service = {s["metric"]["service"] for s in query("sarafan_http_requests_total")}
            assert by_service == set(SERVICES)

            rules = httpx.get(f"{api}/rules").json()["data"]["groups"]
            loaded = {r["name"] for g in rules for r in g["rules"]}
            assert {"SarafanServiceDown", "SarafanDlqGrowing", "SarafanOutboxBacklog"} <= loaded
            assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
