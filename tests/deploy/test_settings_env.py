"""Every LEADFLOW_* variable the deployments set is a setting, of the process it is given to.

A misspelt variable is ignored silently by pydantic-settings (extra="ignore"), so the
deployment files are checked against the settings classes' fields.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from shared.settings import LeadflowSettings
from tests.deploy.manifests import (
    LEADFLOW_VARIABLE,
    REPO,
    SERVICE_SETTINGS,
    all_setting_names,
    compose,
    compose_environment,
    deployment_files,
    dockerfile_env,
    dockerfile_instructions,
    env_names,
    k8s_documents,
    k8s_resource,
)

SETTINGS_CLASSES: list[type[LeadflowSettings]] = [LeadflowSettings, *SERVICE_SETTINGS.values()]

# What each one-shot step reads: `leadflow topics` LeadflowSettings, the migration PipelineSettings.
STEP_SETTINGS: dict[str, list[type[LeadflowSettings]]] = {
    "topics": [LeadflowSettings],
    "migrate": [SERVICE_SETTINGS["pipeline"]],
}


def test_settings_read_plain_prefixed_names() -> None:
    """env var = LEADFLOW_ + field name upper-cased: no aliases change that."""
    for settings in SETTINGS_CLASSES:
        assert settings.model_config.get("env_prefix") == "LEADFLOW_"
        assert settings.model_config.get("case_sensitive", False) is False
        for name, field in settings.model_fields.items():
            assert field.alias is None, (settings, name)
            assert field.validation_alias is None, (settings, name)


def test_every_service_settings_class_is_checked() -> None:
    """A new service's settings.py joins SERVICE_SETTINGS, or its variables go unchecked."""
    found = set()
    for path in sorted((REPO / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        found |= {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, LeadflowSettings)
            and value is not LeadflowSettings
        }
    assert found == set(SERVICE_SETTINGS.values())


@pytest.mark.parametrize("path", deployment_files(), ids=lambda p: p.name)
def test_every_leadflow_variable_named_is_a_setting(path: Any) -> None:
    named = set(LEADFLOW_VARIABLE.findall(path.read_text(encoding="utf-8")))
    unknown = named - all_setting_names()
    assert not unknown, f"{path.name} names variables no settings class defines: {unknown}"


def image_env() -> dict[str, str]:
    env = dockerfile_env(dockerfile_instructions())
    return {k: v for k, v in env.items() if LEADFLOW_VARIABLE.fullmatch(k)}


def test_image_sets_the_bind_address_for_containers() -> None:
    assert image_env() == {"LEADFLOW_HOST": "0.0.0.0"}


def check_settings(
    classes: list[type[LeadflowSettings]], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each variable is a field of one of ``classes``, and its value validates."""
    allowed = set().union(*(env_names(cls) for cls in classes))
    leadflow = {k: v for k, v in env.items() if LEADFLOW_VARIABLE.fullmatch(k)}
    assert set(leadflow) <= allowed, f"not read by {classes}: {set(leadflow) - allowed}"
    for name in [n for n in os.environ if n.startswith("LEADFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in leadflow.items():
        monkeypatch.setenv(name, value)
    for cls in classes:
        cls()  # raises on a value that does not validate


def compose_steps() -> list[tuple[str, list[type[LeadflowSettings]]]]:
    return [(name, [cls]) for name, cls in SERVICE_SETTINGS.items()] + [
        ("init", [c for classes in STEP_SETTINGS.values() for c in classes])
    ]


@pytest.mark.parametrize(
    ("service", "classes"), compose_steps(), ids=[s for s, _ in compose_steps()]
)
def test_compose_service_variables_are_its_settings(
    service: str, classes: list[type[LeadflowSettings]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**image_env(), **compose_environment(compose()["services"][service])}
    check_settings(classes, env, monkeypatch)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as Kubernetes assembles it (image, envFrom, then env)."""
    env = image_env()
    for source in container.get("envFrom", []):
        env.update(k8s_resource("ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = k8s_resource("Secret", ref["name"])["stringData"][ref["key"]]
    return env


def k8s_containers() -> list[tuple[str, dict[str, Any], list[type[LeadflowSettings]]]]:
    found = []
    for _, doc in k8s_documents():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            name = container["name"]
            classes = STEP_SETTINGS.get(name) or [SERVICE_SETTINGS[name]]
            found.append((f"{doc['metadata']['name']}/{name}", container, classes))
    return found


@pytest.mark.parametrize(
    ("where", "container", "classes"), k8s_containers(), ids=[w for w, _, _ in k8s_containers()]
)
def test_k8s_container_variables_are_its_settings(
    where: str,
    container: dict[str, Any],
    classes: list[type[LeadflowSettings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_settings(classes, container_env(container), monkeypatch)


def test_shared_config_map_holds_only_shared_settings() -> None:
    """It goes to every pod, so only what every process reads belongs in it."""
    assert set(k8s_resource("ConfigMap", "leadflow-env")["data"]) <= env_names(LeadflowSettings)
