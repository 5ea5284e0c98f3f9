"""Reading the deployment files (Dockerfile, docker-compose.yml, deploy/k8s) for the checks."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from services.ingest.settings import IngestSettings
from services.pipeline.settings import PipelineSettings
from services.scoring.settings import ScoringSettings
from services.webhooks.settings import WebhooksSettings
from shared.settings import LeadflowSettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S_DIR = REPO / "deploy" / "k8s"
STRIMZI_DIR = K8S_DIR / "strimzi"
KAFKA_POM = REPO / "deploy" / "kafka" / "pom.xml"
DEPLOY_README = REPO / "deploy" / "README.md"

PARTITIONS = 6
"""Partitions of every topic in the deployments: the most useful scoring replicas."""

SERVICE_SETTINGS: dict[str, type[LeadflowSettings]] = {
    "ingest": IngestSettings,
    "scoring": ScoringSettings,
    "pipeline": PipelineSettings,
    "webhooks": WebhooksSettings,
}

LEADFLOW_VARIABLE = re.compile(r"\bLEADFLOW_[A-Z0-9_]+\b")

PUBLISH_ADDRESS = "LEADFLOW_PUBLISH_ADDRESS"
"""Interpolated by compose into docker-compose.yml's published ports; no process reads it."""


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: prefix + field name, upper-cased."""
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def all_setting_names() -> set[str]:
    """Every name a deployment file may use: the settings, and compose's publish address."""
    names = env_names(LeadflowSettings) | {PUBLISH_ADDRESS}
    for settings in SERVICE_SETTINGS.values():
        names |= env_names(settings)
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty documents of a multi-document YAML file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment (a mapping or a list of NAME=value) as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) for item in environment)
        return {name: value for name, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def k8s_files() -> list[Path]:
    """The Kubernetes manifests (kustomization.yaml is kustomize's, not a resource)."""
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in k8s_files() for doc in load_documents(path)]


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    for _, doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise LookupError(f"no {kind} named {name} in {K8S_DIR}")


def strimzi_topics() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(STRIMZI_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_documents(path)
    ]


def deployment_files() -> list[Path]:
    """Every file that may name a LEADFLOW_ variable (the deployment guide too)."""
    return [DOCKERFILE, COMPOSE_FILE, DEPLOY_README, *sorted(K8S_DIR.rglob("*.yaml"))]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order, continuation lines joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV of the last stage (KEY=value form)."""
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    env: dict[str, str] = {}
    for ins in instructions[last_from:]:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env
