"""The compose stack's operator parts, run where they can be without Docker: the secret files
`sarafan secrets` writes, the nats entrypoint (with the real nats-server), the mongo init and
healthcheck scripts (under node, with a stand-in for the shell's `db`), Alertmanager's
configuration (`amtool check-config`) and the OpenTelemetry Collector's, parsed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nats
import pytest

from sarafan.compose_secrets import secret_files, write_secrets
from sarafan.embedded import LOCALHOST, find_executable, free_port
from sarafan.nats_auth import password_variable, users
from shared.topology import SERVICES
from shared.weak_secrets import directory_refusals
from tests.helpers import wait_until

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NODE = shutil.which("node")
AMTOOL = shutil.which("amtool")


def _mounted(service: str) -> dict[str, str]:
    mounted = {}
    for entry in COMPOSE["services"][service].get("secrets", []):
        if isinstance(entry, str):
            mounted[entry] = entry
        else:
            mounted[entry.get("target", entry["source"])] = entry["source"]
    return mounted


def test_sarafan_secrets_writes_every_secret_compose_reads_strong_and_keeps_them(tmp_path):
    directory = tmp_path / "secrets"
    written = write_secrets(directory)
    assert {name for name, _ in written} == set(COMPOSE["secrets"]) == set(secret_files())
    assert all(made for _, made in written)
    assert directory.stat().st_mode & 0o777 == 0o700  # nobody else on the host gets in
    assert directory_refusals(directory) == []
    before = {p.name: p.read_text() for p in directory.iterdir()}
    assert len(set(before.values())) == len(before), "every value is its own"
    # Existing files are kept (a second run changes nothing), replaced only with --force.
    assert not any(made for _, made in write_secrets(directory))
    assert {p.name: p.read_text() for p in directory.iterdir()} == before
    assert all(made for _, made in write_secrets(directory, force=True))
    after = {p.name: p.read_text() for p in directory.iterdir()}
    assert all(after[name] != before[name] for name in before)


def test_each_service_connects_as_its_own_mongodb_user_from_the_url_sarafan_secrets_makes(
    tmp_path,
):
    write_secrets(tmp_path)
    for service in SERVICES:
        source = _mounted(service)["mongodb_url"]
        url = (tmp_path / source).read_text().strip()
        assert re.fullmatch(
            rf"mongodb://{service}:[A-Za-z0-9_-]{{43}}@mongo:27017/\?replicaSet=rs0&authSource=admin",
            url,
        ), url
    assert _mounted("backup")["mongodb_url"] == "mongodb_url_backup"


def test_sarafan_secrets_and_check_secrets_from_the_command_line(tmp_path):
    from sarafan.cli import main as sarafan

    assert sarafan(["secrets", "--dir", str(tmp_path / "s")]) == 0
    assert sarafan(["check-secrets", "--dir", str(tmp_path / "s")]) == 0
    (tmp_path / "s/nats_sys_password").write_text("change-me\n")
    assert sarafan(["check-secrets", "--dir", str(tmp_path / "s")]) == 1
    (tmp_path / "s/nats_sys_password").unlink()
    (tmp_path / "s/mongodb_url_members").write_text("mongodb://members:short@mongo:27017/\n")
    assert sarafan(["check-secrets", "--dir", str(tmp_path / "s")]) == 1


def _start_nats_entrypoint(tmp_path: Path, secrets_dir: Path, port: int) -> subprocess.Popen:
    """deploy/nats/entrypoint.sh with compose's command (the config mounted at /etc/nats read
    from deploy/nats), its secrets from `secrets_dir`; listening on this host's free ports."""
    script = (ROOT / "deploy/nats/entrypoint.sh").read_text()
    assert "/run/secrets/nats_*_password" in script
    (tmp_path / "entrypoint.sh").write_text(script.replace("/run/secrets", str(secrets_dir)))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nats-server").symlink_to(find_executable("nats-server"))
    # The mounted ./deploy/nats, its JetStream directory (the nats-data volume) moved here.
    assert "./deploy/nats:/etc/nats:ro" in COMPOSE["services"]["nats"]["volumes"]
    etc = tmp_path / "etc-nats"
    shutil.copytree(ROOT / "deploy/nats", etc)
    conf = (etc / "nats.conf").read_text()
    assert "store_dir: /data/jetstream" in conf
    (etc / "nats.conf").write_text(conf.replace("/data/jetstream", str(tmp_path / "js")))
    command = [
        str(word).replace("/etc/nats", str(etc)) for word in COMPOSE["services"]["nats"]["command"]
    ]
    local = ["-a", LOCALHOST, "-p", str(port), "-m", str(free_port())]
    with open(tmp_path / "nats.log", "wb") as log:
        return subprocess.Popen(
            ["/bin/sh", str(tmp_path / "entrypoint.sh"), *command, *local],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def test_the_nats_entrypoint_gives_nats_server_each_password_from_its_secret_file(tmp_path):
    """The compose nats container's entrypoint and configuration, run with the nats-server the
    tests use: each user signs in with the password of its file, a wrong one does not."""
    secrets_dir = tmp_path / "run-secrets"
    write_secrets(secrets_dir)
    port = free_port()
    proc = _start_nats_entrypoint(tmp_path, secrets_dir, port)
    try:
        url = f"nats://{LOCALHOST}:{port}"
        for user in users():
            password = (secrets_dir / password_variable(user).lower()).read_text().strip()

            async def connected(user: str = user, password: str = password) -> bool:
                assert proc.poll() is None, (tmp_path / "nats.log").read_text()[-2000:]
                try:
                    client = await nats.connect(
                        url, user=user, password=password, allow_reconnect=False
                    )
                except Exception:
                    return False
                await client.close()
                return True

            await wait_until(connected, timeout=15, message=f"{user} signs in")
        with pytest.raises(Exception, match="Authorization"):
            await nats.connect(url, user="members", password="x" * 43, allow_reconnect=False)
    finally:
        proc.terminate()
        proc.wait(10)


NODE_SHIM = """
const fs = require("fs");
const path = require("path");
const secrets = process.argv[2], script = process.argv[3];
const real = fs.readFileSync;
fs.readFileSync = (file, ...rest) =>
  real(String(file).replace("/run/secrets", secrets), ...rest);
const calls = [];
const admin = {
  createUser: (user) => calls.push(["createUser", user]),
  auth: (user, pwd) => calls.push(["auth", user, pwd]),
};
globalThis.db = { getSiblingDB: (name) => (calls.push(["db", name]), admin) };
let initiated = false;
globalThis.rs = {
  status: () => { if (!initiated) throw new Error("no replset config"); return { ok: 1 }; },
  initiate: (config) => { initiated = true; calls.push(["initiate", config]); return { ok: 1 }; },
};
globalThis.print = () => {};
require(path.resolve(script));
console.log(JSON.stringify(calls));
"""


def _run_under_node(tmp_path: Path, script: Path, env: dict[str, str] | None = None) -> list:
    shim = tmp_path / "shim.js"
    shim.write_text(NODE_SHIM)
    done = subprocess.run(
        [NODE, str(shim), str(tmp_path / "secrets"), str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="node not installed: the mongo init script is parsed only")
def test_the_mongo_init_script_makes_each_service_a_user_with_readwrite_on_its_own_database(
    tmp_path,
):
    write_secrets(tmp_path / "secrets")
    mounted = {
        e if isinstance(e, str) else e["source"] for e in COMPOSE["services"]["mongo"]["secrets"]
    }
    assert {f"mongodb_url_{s}" for s in (*SERVICES, "backup")} <= mounted
    calls = _run_under_node(tmp_path, ROOT / "deploy/mongo/initdb/sarafan-users.js")
    made = {call[1]["user"]: call[1] for call in calls if call[0] == "createUser"}
    assert set(made) == {*SERVICES, "backup"}
    for service in SERVICES:
        url = (tmp_path / "secrets" / f"mongodb_url_{service}").read_text()
        assert f":{made[service]['pwd']}@" in url, "the password of the URL the service uses"
        assert made[service]["roles"] == [{"role": "readWrite", "db": f"sarafan_{service}"}]
    assert {r["role"] for r in made["backup"]["roles"]} == {"backup", "restore"}
    assert all(call[1] == "admin" for call in calls if call[0] == "db")


@pytest.mark.skipif(
    NODE is None, reason="node not installed: the healthcheck script is parsed only"
)
def test_the_mongo_healthcheck_signs_in_from_the_secret_file_and_initiates_the_replica_set(
    tmp_path,
):
    write_secrets(tmp_path / "secrets")
    env = {"MONGO_INITDB_ROOT_USERNAME": "root", "PATH": "/usr/bin:/bin"}
    calls = _run_under_node(tmp_path, ROOT / "deploy/mongo/healthcheck.js", env)
    password = (tmp_path / "secrets/mongo_root_password").read_text().strip()
    assert ["auth", "root", password] in calls
    (initiate,) = [c for c in calls if c[0] == "initiate"]
    assert initiate[1]["_id"] == "rs0" and initiate[1]["members"][0]["host"] == "mongo:27017"
    test = COMPOSE["services"]["mongo"]["healthcheck"]["test"]
    assert "/etc/sarafan/healthcheck.js" in test and "-p" not in test


def _interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's interpolation of `${NAME}` and `${NAME:-default}` (all this file uses)."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3)
        return environ.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text)


ALERT_SETTINGS = [
    {},
    {
        "ALERT_RECEIVER": "webhook",
        "ALERT_WEBHOOK_URL": "https://hooks.example.org/sarafan",
        "ALERT_SMTP_SMARTHOST": "smtp.example.org:587",
        "ALERT_SMTP_REQUIRE_TLS": "true",
        "ALERT_EMAIL_TO": "oncall@example.org",
    },
]


@pytest.mark.parametrize("environ", ALERT_SETTINGS, ids=["defaults", "webhook"])
def test_alertmanager_config_sends_to_the_receiver_the_operator_sets(environ, tmp_path):
    text = _interpolate(COMPOSE["configs"]["alertmanager"]["content"], environ)
    config = yaml.safe_load(text)
    receivers = {r["name"]: r for r in config["receivers"]}
    chosen = environ.get("ALERT_RECEIVER", "email")
    assert config["route"]["receiver"] == chosen and chosen in receivers
    if chosen == "email":
        assert config["global"]["smtp_smarthost"] == "mailpit:1025"  # the compose SMTP
        assert receivers["email"]["email_configs"][0]["to"] == "operator@sarafan.local"
    else:
        assert receivers["webhook"]["webhook_configs"][0]["url"] == environ["ALERT_WEBHOOK_URL"]
    alertmanager = COMPOSE["services"]["alertmanager"]
    (mount,) = alertmanager["configs"]
    assert f"--config.file={mount['target']}" in alertmanager["command"]
    if AMTOOL is None:
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager): parsed only")
    (tmp_path / "alertmanager.yml").write_text(text)
    done = subprocess.run(
        [AMTOOL, "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_prometheus_sends_alerts_to_the_compose_alertmanager():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in COMPOSE["services"]
    assert f"127.0.0.1:{port}:{port}" in COMPOSE["services"][host]["ports"]
    assert "alertmanager" in COMPOSE["services"]["prometheus"]["depends_on"]


def test_the_collector_receives_otlp_http_on_4318_and_exports_to_jaeger():
    collector = COMPOSE["services"]["otel-collector"]
    (volume,) = collector["volumes"]
    source, target = volume.split(":")[:2]
    assert collector["command"] == [f"--config={target}"]
    assert re.fullmatch(
        r"otel/opentelemetry-collector(-contrib)?:\d+\.\d+\.\d+", collector["image"]
    )
    config = yaml.safe_load((ROOT / source).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    for service in SERVICES:
        endpoint = COMPOSE["services"][service]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://otel-collector:4318", service
    (pipeline,) = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    (exporter,) = [config["exporters"][e] for e in pipeline["exporters"]]
    host, port = exporter["endpoint"].split(":")
    jaeger = COMPOSE["services"][host]
    assert port == "4317" and jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert re.fullmatch(r"jaegertracing/all-in-one:\d+\.\d+\.\d+", jaeger["image"])
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]  # the UI, on loopback only
