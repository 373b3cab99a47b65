"""Kubernetes: every kustomization rendered (`kubectl kustomize` where kubectl exists), the
manifests parsed, the NATS Helm values checked against the pinned chart's keys and shapes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sarafan.nats_auth import password_variable, users
from sarafan.prometheus_rule import RULES, TARGET, prometheus_rule
from shared.probes import STALE_SECONDS
from shared.service import READY_PING_SECONDS
from shared.settings import DEFAULT_PORTS

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KUBECTL = shutil.which("kubectl")
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _python_render(directory: Path) -> list[dict]:
    """What kustomize would emit, without kubectl: each resource file's documents (a directory
    resource rendered the same way), the namespace and common labels applied."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    docs: list[dict] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.exists(), f"{directory}: {resource} does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), f"{path} has no kustomization.yaml"
            docs += _python_render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if "namespace" in kustomization and doc["kind"] != "Namespace":
            doc["metadata"].setdefault("namespace", kustomization["namespace"])
        for entry in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    return docs


def _render(directory: Path) -> list[dict]:
    if KUBECTL is None:
        return _python_render(directory)
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


_RENDERED: dict[Path, list[dict]] = {}


def _documents(directory: Path = K8S) -> list[dict]:
    if directory not in _RENDERED:
        _RENDERED[directory] = _render(directory)
    return _RENDERED[directory]


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == kind}


def _routes() -> set[str]:
    from services.members.app import MembersSettings, build

    return {getattr(r, "path", "") for r in build(MembersSettings()).routes}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "directory", KUSTOMIZATIONS, ids=[str(p.relative_to(K8S)) or "." for p in KUSTOMIZATIONS]
)
def test_every_kustomization_renders_and_every_document_has_the_required_fields(directory):
    """With kubectl (and its kustomize) where it is installed; else each reference resolved and
    each file parsed here, which is all that can be checked without it."""
    docs = _documents(directory)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sarafan", doc["metadata"]


def test_the_top_kustomization_renders_the_services_mongodb_and_monitoring():
    kinds = {d["kind"] for d in _documents()}
    assert {"Deployment", "MongoDBCommunity", "ServiceMonitor", "PrometheusRule"} <= kinds
    names = [(d["kind"], d["metadata"]["name"]) for d in _documents()]
    assert len(names) == len(set(names)), "a resource is defined twice"


def test_each_service_has_a_deployment_with_probes_on_real_paths_and_resources():
    deployments = _by_kind("Deployment")
    assert set(deployments) == set(DEFAULT_PORTS)
    routes = _routes()
    for name, port in DEFAULT_PORTS.items():
        spec = deployments[name]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        container = _container(deployments[name])
        assert container["command"] == ["sarafan", "run", name]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in routes and get["port"] == "http", (name, probe)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # A stuck event loop answers nothing: the probe's timeout is what fails it, so it is
        # shorter than the heartbeat's own limit; /readyz answers a MongoDB outage within it.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["timeoutSeconds"] < STALE_SECONDS, (name, probe)
        assert container["readinessProbe"]["timeoutSeconds"] > READY_PING_SECONDS, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        env = {e["name"]: e for e in container["env"]}
        assert env["NATS_USER"]["value"] == name
        assert env[f"SARAFAN_{name.upper()}_PORT"]["value"] == str(port)
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_each_service_has_a_service_an_hpa_and_a_disruption_budget():
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert set(_by_kind(kind)) == set(DEFAULT_PORTS), kind
    for name, hpa in _by_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    for name, pdb in _by_kind("PodDisruptionBudget").items():
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name


def _mongodb_users() -> dict[str, dict]:
    (replica_set,) = _by_kind("MongoDBCommunity").values()
    return {user["name"]: user for user in replica_set["spec"]["users"]}


def test_config_sets_three_stream_replicas_and_secrets_feed_every_reference():
    config = _by_kind("ConfigMap")["sarafan-config"]["data"]
    assert config["SARAFAN_STREAM_REPLICAS"] == "3"
    secrets = _by_kind("Secret")
    # The MongoDB operator writes these, one per user (connectionStringSecretName).
    made_by_operator = {u["connectionStringSecretName"] for u in _mongodb_users().values()}
    for deployment in _by_kind("Deployment").values():
        for env in _container(deployment)["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if not ref or ref.get("optional"):
                continue
            if ref["name"] in made_by_operator:
                assert ref["key"] == "connectionString.standard", ref
            else:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    assert "MONGODB_URL" not in secrets["sarafan-secrets"]["stringData"]


def test_each_service_connects_to_mongodb_as_its_own_user_with_readwrite_on_its_database_only():
    users_ = _mongodb_users()
    secrets = _by_kind("Secret")
    for name, deployment in _by_kind("Deployment").items():
        env = {e["name"]: e for e in _container(deployment)["env"]}
        ref = env["MONGODB_URL"]["valueFrom"]["secretKeyRef"]
        (user,) = [u for u in users_.values() if u["connectionStringSecretName"] == ref["name"]]
        assert user["name"] == name and user["db"] == "admin"
        assert user["roles"] == [{"name": "readWrite", "db": f"sarafan_{name}"}], name
        assert user["passwordSecretRef"]["name"] in secrets, name
    # Besides the services, only the backup user; nobody has a cluster-wide write role.
    assert set(users_) == set(DEFAULT_PORTS) | {"backup"}
    assert {r["name"] for r in users_["backup"]["roles"]} == {"backup", "restore"}
    names = [u["connectionStringSecretName"] for u in users_.values()]
    assert len(names) == len(set(names)), "the operator needs one connection Secret per user"


def test_mongodb_is_a_three_member_replica_set_with_auth_managed_by_the_maintained_operator():
    (replica_set,) = _by_kind("MongoDBCommunity").values()
    assert replica_set["apiVersion"] == "mongodbcommunity.mongodb.com/v1"
    assert replica_set["spec"]["members"] == 3 and replica_set["spec"]["type"] == "ReplicaSet"
    assert replica_set["spec"]["version"].startswith("8.")
    assert replica_set["spec"]["security"]["authentication"]["modes"] == ["SCRAM"]
    text = (K8S / "mongodb/replica-set.yaml").read_text()
    assert "mongodb/mongodb-kubernetes --version" in text and "community-operator" not in text


def test_the_service_monitor_scrapes_every_service_under_the_job_the_alert_rules_name():
    (monitor,) = _by_kind("ServiceMonitor").values()
    spec = monitor["spec"]
    (expression,) = spec["selector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
    assert set(expression["values"]) == set(DEFAULT_PORTS)
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    jobs = set()
    for name, service in _by_kind("Service").items():
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}, name
        jobs.add(service["metadata"]["labels"][spec["jobLabel"]])
    rules = RULES.read_text()
    assert jobs == {"sarafan"} and 'up{job="sarafan"}' in rules


def test_the_prometheus_rule_is_the_compose_rules_file_and_current():
    assert TARGET.read_text() == prometheus_rule(RULES.read_text()), (
        "deploy/k8s/monitoring/prometheus-rule.yaml is stale: python -m sarafan.prometheus_rule"
    )
    (rule,) = _by_kind("PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


# The keys of the NATS Helm chart `nats` 2.14.2 (its values.yaml) these values may use, with the
# shape its templates take. FREE: a map merged into the rendered object as it is (`merge`);
# ENV: the `nats.env` helper's map of variable name → string or map; TSC: the pod template's map
# of topologyKey → constraint. Anything else must be one of these keys with a value of that type.
FREE, ENV, TSC, PATCH = "free map", "env map", "topology map", "JSON patch list"
_TLS = {"enabled": bool, "secretName": str, "dir": str, "cert": str, "key": str}
_TLS |= {"merge": FREE, "patch": PATCH}
_IMAGE = {k: str for k in ("repository", "tag", "pullPolicy", "registry", "digest")}
_IMAGE["fullImageName"] = str
_PVC = {"enabled": bool, "size": str, "storageClassName": str, "merge": FREE, "patch": PATCH}
_PVC["name"] = str
_MERGEABLE = {"merge": FREE, "patch": PATCH, "name": str}
NATS_CHART_2_14_2: dict[str, Any] = {
    "config": {
        "cluster": {
            "enabled": bool,
            "port": int,
            "replicas": int,
            "noAdvertise": bool,
            "routeURLs": {"user": str, "password": str, "useFQDN": bool, "k8sClusterDomain": str},
            "tls": _TLS,
            "merge": FREE,
            "patch": PATCH,
        },
        "jetstream": {
            "enabled": bool,
            "fileStore": {"enabled": bool, "dir": str, "pvc": _PVC, "maxSize": str},
            "memoryStore": {"enabled": bool, "maxSize": str},
            "merge": FREE,
            "patch": PATCH,
        },
        "nats": {"port": int, "tls": _TLS},
        "monitor": {"enabled": bool, "port": int, "tls": {"enabled": bool}},
        "profiling": {"enabled": bool, "port": int},
        "serverNamePrefix": str,
        "merge": FREE,
        "patch": PATCH,
    },
    "container": {
        "image": _IMAGE,
        "ports": {k: FREE for k in ("nats", "leafnodes", "websocket", "mqtt", "cluster")}
        | {k: FREE for k in ("gateway", "monitor", "profiling")},
        "env": ENV,
        "merge": FREE,
        "patch": PATCH,
        "resources": FREE,
    },
    "reloader": {"enabled": bool, "image": _IMAGE, "env": ENV, "merge": FREE, "patch": PATCH},
    "promExporter": {
        "enabled": bool,
        "image": _IMAGE,
        "port": int,
        "monitorDomain": str,
        "env": ENV,
        "merge": FREE,
        "patch": PATCH,
        "podMonitor": {"enabled": bool, **_MERGEABLE},
    },
    "service": {"enabled": bool, "ports": FREE, **_MERGEABLE},
    "statefulSet": _MERGEABLE,
    "podTemplate": {
        "configChecksumAnnotation": bool,
        "topologySpreadConstraints": TSC,
        "merge": FREE,
        "patch": PATCH,
    },
    "headlessService": _MERGEABLE,
    "configMap": _MERGEABLE,
    "podDisruptionBudget": {"enabled": bool, **_MERGEABLE},
    "serviceAccount": {"enabled": bool, **_MERGEABLE},
    "natsBox": {"enabled": bool},
}


def _check_shape(value: Any, shape: Any, where: str) -> list[str]:
    if shape == FREE:
        return [] if isinstance(value, dict) else [f"{where}: a map, not {type(value).__name__}"]
    if shape == PATCH:
        return [] if isinstance(value, list) else [f"{where}: a JSON patch list"]
    if shape == ENV:
        if not isinstance(value, dict):
            return [f"{where}: the chart takes a map of name → value, not a list"]
        return [
            f"{where}.{k}: a string or a map (valueFrom)"
            for k, v in value.items()
            if not isinstance(v, str | dict)
        ]
    if shape == TSC:
        if not isinstance(value, dict):
            return [f"{where}: a map of topologyKey → constraint"]
        return [f"{where}.{k}: a map" for k, v in value.items() if not isinstance(v, dict)]
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where}: a map"]
        problems = []
        for key, item in value.items():
            if key not in shape:
                problems.append(f"{where}.{key}: not a key of the chart")
            else:
                problems += _check_shape(item, shape[key], f"{where}.{key}".lstrip("."))
        return problems
    return [] if isinstance(value, shape) else [f"{where}: a {shape.__name__}"]


def _nats_values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "nats/values.yaml").read_text())


def test_nats_values_use_only_the_pinned_charts_keys_in_the_shapes_it_takes():
    values = _nats_values()
    assert _check_shape(values, NATS_CHART_2_14_2, "") == []
    assert "--version 2.14.2" in (K8S / "nats/values.yaml").read_text()
    # A list where the chart wants a map is refused (the mistake this test exists for).
    assert _check_shape(
        {"container": {"env": [{"name": "X", "value": "y"}]}}, NATS_CHART_2_14_2, ""
    )


def _nats_env(env: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's `nats.env` helper: a string becomes `value`, a map is merged with `name`."""
    rendered = []
    for name, value in sorted(env.items()):
        if isinstance(value, str):
            rendered.append({"name": name, "value": value})
        else:
            rendered.append({"name": name, **value})
    return rendered


def test_the_nats_container_gets_every_password_variable_from_the_secret():
    env = _nats_env(_nats_values()["container"]["env"])
    assert {e["name"] for e in env} == {password_variable(u) for u in users()}
    for entry in env:
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "sarafan-nats", "key": entry["name"]}
    assert not any(re.fullmatch(r"\d+", e["name"]) for e in env)


def test_nats_values_run_a_three_node_jetstream_cluster_with_fsync_and_a_pod_monitor():
    values = _nats_values()
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    exporter = values["promExporter"]
    assert exporter["enabled"] is True and exporter["podMonitor"]["enabled"] is True
    # The chart labels its pods app.kubernetes.io/name=nats: the job the alert rules name.
    assert exporter["podMonitor"]["merge"]["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert 'up{job="nats"}' in RULES.read_text() and "nats_varz_connections" in RULES.read_text()
