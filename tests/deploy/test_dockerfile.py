"""The Dockerfile, read as text: multi-stage, slim, non-root, `leadflow` as the entrypoint."""

from __future__ import annotations

import json
import re
import tomllib

from tests.deploy.manifests import (
    DOCKERIGNORE,
    REPO,
    SERVICE_SETTINGS,
    Instruction,
    dockerfile_instructions,
)


def stages() -> list[list[Instruction]]:
    """The instructions of each stage, in order (ARGs before the first FROM are left out)."""
    found: list[list[Instruction]] = []
    for instruction in dockerfile_instructions():
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def global_args() -> dict[str, str]:
    args = {}
    for instruction in dockerfile_instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def base_image(stage: list[Instruction]) -> str:
    image = stage[0].arguments.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: global_args()[m.group(1)], image)


def test_builds_in_stages_on_python_311_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    assert all(base_image(stage) == "python:3.11-slim" for stage in all_stages)
    builder = all_stages[0][0].arguments.split()
    assert builder[1].upper() == "AS"
    runtime = all_stages[-1]
    copies_from_builder = [
        i for i in runtime if i.keyword == "COPY" and f"--from={builder[2]}" in i.arguments
    ]
    assert copies_from_builder, "the runtime stage takes what the builder installed"


def test_runtime_stage_holds_only_the_venv() -> None:
    runtime = stages()[-1]
    copies = [i.arguments for i in runtime if i.keyword in {"COPY", "ADD"}]
    assert copies
    assert all(c.startswith("--from=") for c in copies), copies
    assert not [i for i in runtime if i.keyword == "RUN" and "pip install" in i.arguments]


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [i.arguments for i in stages()[-1] if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}
    assert group not in {"root", "0"}
    # numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
    assert user.isdigit()
    assert int(user) > 0


def test_entrypoint_is_the_leadflow_command() -> None:
    (entrypoint,) = [i.arguments for i in stages()[-1] if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["leadflow"]  # exec form: signals reach the process
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "leadflow" in scripts


def test_exposes_the_service_ports() -> None:
    exposed = {
        int(port) for i in stages()[-1] if i.keyword == "EXPOSE" for port in i.arguments.split()
    }
    assert exposed == {cls.model_fields["port"].default for cls in SERVICE_SETTINGS.values()}


def test_build_context_leaves_out_local_state() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: only what the build copies is sent"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {
        part.rstrip("/")
        for i in stages()[0]
        if i.keyword == "COPY"
        for part in i.arguments.split()[:-1]
        if not part.startswith("--")
    }
    assert sources == allowed
    assert not allowed & {".venv", ".git", ".leadflow", "tests"}
