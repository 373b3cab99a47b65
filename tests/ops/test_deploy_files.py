"""Compose, Dockerfile and Kubernetes manifests checked without Docker or a cluster."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.embedded import find_executable
from shared.nats_auth import password_variable, users
from shared.settings import DEFAULT_PORTS

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = tuple(DEFAULT_PORTS)
INFRA = ("nats", "mongo", "prometheus", "grafana", "nats-exporter", "mailpit")
SPEC_PORTS = {"nats": 4222, "prometheus": 9090, "grafana": 3000, "mailpit": 8025}


def _settings_aliases(service: str) -> set[str]:
    module = importlib.import_module(f"services.{service}.app")
    cls = getattr(module, f"{service.capitalize()}Settings")
    return {f.alias for f in cls.model_fields.values() if f.alias} | {
        f"SARAFAN_{service.upper()}_PORT"
    }


def _host_ports(spec: dict) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in spec.get("ports", [])}


def test_compose_has_every_component_with_a_pinned_official_image():
    assert set(SERVICES) | set(INFRA) <= set(COMPOSE["services"])
    for name in INFRA:
        image = COMPOSE["services"][name]["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), image
    nats_version = subprocess.run(
        [find_executable("nats-server"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    tag = COMPOSE["services"]["nats"]["image"].split(":")[1].split("-")[0]
    assert f"v{tag}" in nats_version, f"compose runs nats {tag}, the tests {nats_version}"
    assert COMPOSE["services"]["mongo"]["image"].startswith("mongo:8.")


def test_compose_services_are_healthchecked_restarted_and_wait_for_healthy_dependencies():
    for name, spec in COMPOSE["services"].items():
        assert spec.get("restart") == "unless-stopped", name
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in SERVICES:
        spec = COMPOSE["services"][name]
        deps = spec["depends_on"]
        for dep in ("nats", "mongo"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
        assert spec["command"] == ["sarafan", "run", name]
        assert spec["build"] == "."
    for name in ("prometheus", "grafana", "nats-exporter"):
        conditions = [d["condition"] for d in COMPOSE["services"][name]["depends_on"].values()]
        assert conditions and set(conditions) == {"service_healthy"}, name


def test_compose_env_matches_each_settings_model_and_ports_follow_the_spec():
    for name in SERVICES:
        spec = COMPOSE["services"][name]
        env = spec["environment"]
        unknown = set(env) - _settings_aliases(name)
        assert not unknown, f"{name}: {unknown} are not settings of {name}"
        assert env["NATS_USER"] == name
        assert env["NATS_PASSWORD"] == f"${{{password_variable(name)}:?set in .env}}"
        assert env[f"SARAFAN_{name.upper()}_PORT"] == str(DEFAULT_PORTS[name])
        assert _host_ports(spec) == {DEFAULT_PORTS[name]}
        assert "replicaSet=rs0" in env["MONGODB_URL"] and "@mongo:27017" in env["MONGODB_URL"]
    for name, port in SPEC_PORTS.items():
        assert port in _host_ports(COMPOSE["services"][name]), name
    assert COMPOSE["services"]["notifier"]["environment"]["SMTP_URL"] == "smtp://mailpit:1025"


def test_compose_nats_is_secured_and_mongo_is_a_replica_set_with_auth():
    nats = COMPOSE["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "./deploy/nats:/etc/nats:ro" in nats["volumes"]
    assert set(nats["environment"]) == {password_variable(u) for u in users()}
    mongo = COMPOSE["services"]["mongo"]
    script = "\n".join(mongo["command"])
    assert "--replSet rs0" in script and "--keyFile" in script
    assert "MONGO_INITDB_ROOT_PASSWORD" in mongo["environment"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    named = set(COMPOSE["volumes"])
    for spec in COMPOSE["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, volume
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume


def test_env_example_defines_every_variable_compose_requires():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required <= example, required - example


def test_prometheus_scrapes_the_four_services_on_their_spec_ports_and_the_exporter():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["sarafan"]["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{port}" for name, port in DEFAULT_PORTS.items()}
    assert jobs["nats"]["static_configs"][0]["targets"] == ["nats-exporter:7777"]


def test_grafana_provisions_the_datasource_and_both_dashboards():
    grafana = ROOT / "deploy/grafana"
    source = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    titles = set()
    for path in (grafana / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        titles.add(board["title"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
    assert {"Sarafan — Community health", "Sarafan — Event pipeline"} <= titles


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and all(re.search(r":\d+\.\d+", s) for s in stages)
    final = text.split("\nFROM ")[-1]
    assert "USER 10001" in final and "HEALTHCHECK" in final and "COPY --from=build" in final
    assert "apt-get" not in final and "gcc" not in final
    assert (ROOT / "deploy/docker/healthcheck.py").exists()


def _compose_cli() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_cli(), reason="no `docker compose` CLI here to run `config`")
def test_docker_compose_config_accepts_the_file():
    done = subprocess.run(
        ["docker", "compose", "--env-file", ".env.example", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
