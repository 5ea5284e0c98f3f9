"""deploy/k8s: valid Kubernetes resources that fit together, and Strimzi topics as in shared."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from services.scoring.model import DEFAULT_MODEL_PATH, load_model
from shared.api_keys import create_key
from shared.auth import AuthConfigurationError, load_authenticator
from shared.cli import build_parser
from shared.topics import Topics
from tests.deploy.manifests import (
    K8S_DIR,
    PARTITIONS,
    SERVICE_SETTINGS,
    STRIMZI_DIR,
    dockerfile_instructions,
    k8s_documents,
    k8s_files,
    k8s_resource,
    load_yaml,
    strimzi_topics,
)

OLDEST_KUBERNETES = "1.30"
"""The oldest Kubernetes the manifests must work on (besides the newest the package knows)."""

REPLICAS = {"ingest": 2, "scoring": 3, "pipeline": 2, "webhooks": 1}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def documents_ids() -> list[str]:
    return [f"{path.name}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in k8s_documents()]


def pod_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s_resource("Deployment", f"leadflow-{name}")["spec"]["template"][
        "spec"
    ]
    return spec


def only_container(name: str) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = pod_spec(name)["containers"]
    assert container["name"] == name
    return container


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, latest_version()])
@pytest.mark.parametrize(("path", "doc"), k8s_documents(), ids=documents_ids())
def test_manifest_validates_against_the_kubernetes_schema(
    path: Path, doc: dict[str, Any], version: str
) -> None:
    # strict: unknown fields (typos) are errors too
    kubernetes_validate.validate(doc, version, strict=True)


def test_manifests_are_namespace_agnostic() -> None:
    for path, doc in k8s_documents():
        assert "namespace" not in doc["metadata"], path.name
    for doc in strimzi_topics():
        assert "namespace" not in doc["metadata"]


@pytest.mark.parametrize("directory", [K8S_DIR, STRIMZI_DIR], ids=["k8s", "strimzi"])
def test_kustomization_lists_every_manifest(directory: Path) -> None:
    kustomization = load_yaml(directory / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    present = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present


def test_kustomization_sets_the_image_the_workloads_use() -> None:
    (image,) = load_yaml(K8S_DIR / "kustomization.yaml")["images"]
    used = {
        container["image"]
        for _, doc in k8s_documents()
        if doc["kind"] in {"Deployment", "Job"}
        for key in ("initContainers", "containers")
        for container in doc["spec"]["template"]["spec"].get(key, [])
    }
    assert used == {image["name"]}


# --- workloads ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SERVICE_SETTINGS))
def test_deployment_runs_the_service(name: str) -> None:
    deployment = k8s_resource("Deployment", f"leadflow-{name}")
    assert deployment["spec"]["replicas"] == REPLICAS[name]
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    container = only_container(name)
    assert build_parser().parse_args(container["args"]).command == name
    (port,) = container["ports"]
    assert port == {
        "name": "http",
        "containerPort": SERVICE_SETTINGS[name].model_fields["port"].default,
    }


@pytest.mark.parametrize("name", list(SERVICE_SETTINGS))
def test_deployment_probes_readiness_and_liveness(name: str) -> None:
    container = only_container(name)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def workload_pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for _, doc in k8s_documents()
        if doc["kind"] in {"Deployment", "Job"}
    ]


@pytest.mark.parametrize(("name", "spec"), workload_pods(), ids=[n for n, _ in workload_pods()])
def test_pods_run_locked_down_with_resources(name: str, spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


def test_pods_run_as_the_image_user() -> None:
    (user,) = [i.arguments for i in dockerfile_instructions() if i.keyword == "USER"]
    uid = int(user.split(":")[0])
    for name, spec in workload_pods():
        assert spec["securityContext"]["runAsUser"] == uid, name


def test_every_service_selects_a_deployment_port() -> None:
    services = [doc for _, doc in k8s_documents() if doc["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {
        "leadflow-ingest",
        "leadflow-pipeline",
        "leadflow-webhooks",
    }
    for service in services:
        assert service["spec"]["type"] == "ClusterIP"
        name = service["metadata"]["name"].removeprefix("leadflow-")
        deployment = k8s_resource("Deployment", service["metadata"]["name"])
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == "http"
        assert port["port"] == SERVICE_SETTINGS[name].model_fields["port"].default


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [doc for _, doc in k8s_documents() if doc["kind"] == "PodDisruptionBudget"]
    covered = set()
    for budget in budgets:
        for name in SERVICE_SETTINGS:
            labels = k8s_resource("Deployment", f"leadflow-{name}")["spec"]["template"]["metadata"][
                "labels"
            ]
            if budget["spec"]["selector"]["matchLabels"].items() <= labels.items():
                covered.add(name)
                # a budget that allows no disruption at all blocks node drains
                assert budget["spec"].get("minAvailable", 0) < REPLICAS[name]
    assert covered == set(SERVICE_SETTINGS)


def test_references_resolve() -> None:
    """Every ConfigMap and Secret a pod names is defined here, with the key it asks for."""
    data = {
        (doc["kind"], doc["metadata"]["name"]): {**doc.get("data", {}), **doc.get("stringData", {})}
        for _, doc in k8s_documents()
        if doc["kind"] in {"ConfigMap", "Secret"}
    }
    for name, spec in workload_pods():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in data, name
            if "secret" in volume:
                keys = data[("Secret", volume["secret"]["secretName"])]
                for item in volume["secret"].get("items", []):
                    assert item["key"] in keys, (name, item)
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in data, name
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in data[("Secret", ref["name"])], (name, ref)
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}, name


def test_secret_holds_only_placeholders() -> None:
    secret = k8s_resource("Secret", "leadflow-secrets")
    assert "data" not in secret
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, key


@pytest.mark.parametrize("name", list(SERVICE_SETTINGS))
def test_each_service_reads_its_api_keys_from_the_secret(name: str, tmp_path: Path) -> None:
    """Mounted as a file; the shipped placeholder holds no key, so a service refuses to
    start until real lines (`leadflow keys create`) replace it."""
    container = only_container(name)
    env = {e["name"]: e for e in container.get("env", [])}
    assert "LEADFLOW_API_KEYS" not in env
    assert "LEADFLOW_AUTH" not in env
    path = Path(env["LEADFLOW_API_KEYS_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(name)["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "leadflow-secrets"
    (item,) = volume["secret"]["items"]
    assert item["path"] == path.name
    stored = k8s_resource("Secret", "leadflow-secrets")["stringData"][item["key"]]
    keys_file = tmp_path / path.name
    keys_file.write_text(stored)
    settings = SERVICE_SETTINGS[name](host="0.0.0.0", api_keys_file=keys_file)
    with pytest.raises(AuthConfigurationError, match="holds no key"):
        load_authenticator(settings)
    _, line = create_key("mailer", ["events:write"])
    keys_file.write_text(f"{stored}{line}\n")
    assert load_authenticator(settings).enabled


def test_scoring_reads_the_model_from_its_config_map() -> None:
    container = only_container("scoring")
    model_path = next(e["value"] for e in container["env"] if e["name"] == "LEADFLOW_SCORING_MODEL")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model"]
    assert model_path.startswith(mount["mountPath"] + "/")
    key = model_path.removeprefix(mount["mountPath"] + "/")
    assert key in k8s_resource("ConfigMap", "leadflow-scoring-model")["data"]


def test_model_config_map_is_the_default_model(tmp_path: Path) -> None:
    text = k8s_resource("ConfigMap", "leadflow-scoring-model")["data"]["model.yaml"]
    assert yaml.safe_load(text) == yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    model_file = tmp_path / "model.yaml"
    model_file.write_text(text)
    assert load_model(model_file) == load_model(None)


def test_init_job_creates_topics_then_migrates() -> None:
    spec = k8s_resource("Job", "leadflow-init")["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in {"Never", "OnFailure"}
    (topics,) = spec["initContainers"]
    args = build_parser().parse_args(topics["args"])
    assert (args.command, args.partitions) == ("topics", PARTITIONS)
    (migrate,) = spec["containers"]
    assert migrate["command"] == ["python", "-m", "services.pipeline.migrate"]
    assert importlib.util.find_spec("services.pipeline.migrate") is not None
    assert "LEADFLOW_DATABASE_URL" in {e["name"] for e in migrate["env"]}


def test_replicas_fit_the_partitions() -> None:
    """Consumers beyond the partition count would only stand by."""
    for name in ("scoring", "pipeline"):
        assert REPLICAS[name] <= PARTITIONS
    autoscaler = k8s_resource("HorizontalPodAutoscaler", "leadflow-ingest")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "leadflow-ingest"
    assert autoscaler["spec"]["minReplicas"] == REPLICAS["ingest"]


# --- Strimzi topics -----------------------------------------------------------------------


def test_strimzi_topics_are_well_formed() -> None:
    """kubernetes-validate has no schema for Strimzi's CRDs: the fields the operator reads."""
    topics = strimzi_topics()
    clusters = set()
    for topic in topics:
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["kind"] == "KafkaTopic"
        assert set(topic) == {"apiVersion", "kind", "metadata", "spec"}
        name = topic["metadata"]["name"]
        assert len(name) <= 253
        assert DNS_SUBDOMAIN.fullmatch(name), name
        clusters.add(topic["metadata"]["labels"]["strimzi.io/cluster"])
        spec = topic["spec"]
        assert set(spec) <= {"topicName", "partitions", "replicas", "config"}
        assert isinstance(spec["partitions"], int)
        assert spec["partitions"] >= 1
        assert isinstance(spec["replicas"], int)
        assert 1 <= spec["replicas"] <= 32767
        for key, value in spec.get("config", {}).items():
            assert isinstance(key, str)
            assert isinstance(value, str | int | float | bool), key
    assert len(clusters) == 1
    assert len({t["metadata"]["name"] for t in topics}) == len(topics)


def test_strimzi_topics_are_the_topics_of_shared() -> None:
    declared = {
        t["spec"]["topicName"]: {k: str(v) for k, v in t["spec"].get("config", {}).items()}
        for t in strimzi_topics()
    }
    assert declared == {spec.name: spec.config for spec in Topics().specs()}


def test_strimzi_topics_have_the_deployment_partitions_and_replicas() -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in strimzi_topics()}
    names = Topics()
    # scoring writes a lead's state to the partition number its events came from
    assert topics[names.scoring_state]["partitions"] == topics[names.events]["partitions"]
    for name, spec in topics.items():
        fixed = next(s.partitions for s in names.specs() if s.name == name)
        assert (spec["partitions"], spec["replicas"]) == (fixed or PARTITIONS, 3)


def test_every_k8s_file_is_checked() -> None:
    checked = {path for path, _ in k8s_documents()}
    assert checked == set(k8s_files())
