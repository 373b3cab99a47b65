"""Kubernetes manifests (kustomize base, NATS Helm values, MongoDB replica set), parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.probes import STALE_SECONDS
from shared.service import READY_PING_SECONDS
from shared.settings import DEFAULT_PORTS

# PyYAML comes with the test extras (pyproject); without it these checks cannot parse YAML.
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"


def _documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        path = K8S / "base" / resource
        assert path.exists(), resource
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == kind}


def _routes() -> set[str]:
    from services.members.app import build

    app = build(__import__("services.members.app", fromlist=["x"]).MembersSettings())
    return {getattr(r, "path", "") for r in app.routes}


def test_every_document_has_the_required_fields():
    for doc in _documents():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc


def test_each_service_has_a_deployment_with_probes_on_real_paths_and_resources():
    deployments = _by_kind("Deployment")
    assert set(deployments) == set(DEFAULT_PORTS)
    routes = _routes()
    for name, port in DEFAULT_PORTS.items():
        spec = deployments[name]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        (container,) = spec["template"]["spec"]["containers"]
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


def test_config_sets_three_stream_replicas_and_secrets_feed_every_reference():
    config = _by_kind("ConfigMap")["sarafan-config"]["data"]
    assert config["SARAFAN_STREAM_REPLICAS"] == "3"
    secrets = _by_kind("Secret")
    for deployment in _by_kind("Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for env in container["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref


def test_nats_values_run_a_three_node_jetstream_cluster_with_fsync_always():
    values = yaml.safe_load((K8S / "nats/values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["merge"]["sync_interval"] == "always"


def test_mongodb_is_a_three_member_replica_set_with_auth():
    (replica_set,) = [
        d
        for d in yaml.safe_load_all((K8S / "mongodb/replica-set.yaml").read_text())
        if d["kind"] == "MongoDBCommunity"
    ]
    assert replica_set["spec"]["members"] == 3 and replica_set["spec"]["type"] == "ReplicaSet"
    assert replica_set["spec"]["version"].startswith("8.")
    assert replica_set["spec"]["security"]["authentication"]["modes"] == ["SCRAM"]
