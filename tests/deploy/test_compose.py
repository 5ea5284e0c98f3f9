"""docker-compose.yml: valid Compose, scalable by design, started in the right order."""

from __future__ import annotations

import base64
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from check_jsonschema.builtin_schemas import get_builtin_schema

from services.ingest.settings import IngestSettings
from shared.api_keys import create_key
from shared.auth import AuthConfigurationError, load_authenticator
from shared.cli import build_parser
from tests.deploy.manifests import (
    COMPOSE_FILE,
    KAFKA_POM,
    PARTITIONS,
    PUBLISH_ADDRESS,
    SERVICE_SETTINGS,
    compose,
    compose_environment,
)

LEADFLOW_SERVICES = tuple(SERVICE_SETTINGS)
PUBLISHED = {"ingest": 8001, "pipeline": 8003, "webhooks": 8004}
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def test_compose_file_validates_against_the_compose_specification() -> None:
    # The Compose Specification's JSON schema, as vendored by check-jsonschema (offline).
    schema = get_builtin_schema("vendor.compose-spec")
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_compose_file_has_every_part() -> None:
    assert set(services()) == {"kafka", "postgres", "init", *LEADFLOW_SERVICES}


def test_scoring_scales_by_design() -> None:
    """`--scale scoring=N` needs no fixed name nor host port: the consumer group does the rest."""
    scoring = services()["scoring"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in scoring, f"scoring sets {key}: replicas would collide"
    assert scoring.get("deploy", {}).get("replicas") in (None, 1)


def test_only_the_http_apis_publish_ports() -> None:
    published = {name: service.get("ports") for name, service in services().items()}
    assert {name for name, ports in published.items() if ports} == set(PUBLISHED)
    for name, port in PUBLISHED.items():
        assert published[name] == [f"${{{PUBLISH_ADDRESS}:-127.0.0.1}}:{port}:{port}"]
        assert SERVICE_SETTINGS[name].model_fields["port"].default == port
    assert not any("container_name" in service for service in services().values())


@pytest.mark.parametrize("name", LEADFLOW_SERVICES)
def test_each_service_runs_its_subcommand_of_the_one_image(name: str) -> None:
    service = services()[name]
    args = build_parser().parse_args(service["command"])
    assert args.command == name
    assert "entrypoint" not in service  # the image's: leadflow
    assert service["image"] == services()["init"]["image"]
    assert service.get("build") == "."


@pytest.mark.parametrize("name", LEADFLOW_SERVICES)
def test_each_service_is_probed_on_its_own_port(name: str) -> None:
    """slim images have no curl: the probe is the interpreter, against /readyz."""
    test = services()[name]["healthcheck"]["test"]
    port = SERVICE_SETTINGS[name].model_fields["port"].default
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/readyz" in test[3]
    compile(test[3], f"{name} healthcheck", "exec")


def test_startup_order() -> None:
    found = services()
    assert found["init"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    for name in LEADFLOW_SERVICES:
        depends = found[name]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}
    assert found["pipeline"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # whatever is awaited as healthy has a healthcheck
    for service in found.values():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in found[dependency], dependency
    assert found["init"]["restart"] == "no"


def test_init_creates_the_topics_and_migrates() -> None:
    init = services()["init"]
    assert init["entrypoint"] == ["sh", "-c"]
    (script,) = init["command"]
    steps = [shlex.split(step) for step in script.split("&&")]
    assert len(steps) == 2
    topics, migrate = steps
    assert topics[0] == "leadflow"
    args = build_parser().parse_args(topics[1:])
    assert (args.command, args.partitions) == ("topics", PARTITIONS)
    assert migrate == ["python", "-m", "services.pipeline.migrate"]
    assert importlib.util.find_spec("services.pipeline.migrate") is not None


def test_kafka_is_a_single_kraft_node_reachable_on_the_compose_network() -> None:
    kafka = services()["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    env = compose_environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
    assert "CONTROLLER:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    for single in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[single] == "1", single
    # a KRaft cluster id is a base64url UUID: 16 bytes
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    # what the services bootstrap from is what the broker advertises
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    for name in ("init", *LEADFLOW_SERVICES):
        assert compose_environment(services()[name])["LEADFLOW_KAFKA_BOOTSTRAP_SERVERS"] == (
            advertised
        )


def test_kafka_image_is_the_version_of_the_local_broker() -> None:
    pom_version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    assert pom_version is not None
    assert services()["kafka"]["image"] == f"apache/kafka:{pom_version.group(1)}"


def test_postgres_is_checked_and_used_through_asyncpg() -> None:
    postgres = services()["postgres"]
    assert re.fullmatch(r"postgres:1[78](\.\d+)?", postgres["image"])
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    env = compose_environment(postgres)
    expected = (
        f"postgresql+asyncpg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )
    for name in ("init", "pipeline"):
        assert compose_environment(services()[name])["LEADFLOW_DATABASE_URL"] == expected
    # init has migrated: the pipeline replicas need not race to
    assert compose_environment(services()["pipeline"])["LEADFLOW_MIGRATE_ON_START"] == "false"


def test_compose_file_interpolates_only_the_publish_address() -> None:
    """Every other value is in the file: what the tests read is what compose runs. The
    published ports listen on loopback unless LEADFLOW_PUBLISH_ADDRESS says otherwise."""
    found = INTERPOLATION.findall(COMPOSE_FILE.read_text())
    assert found
    assert set(found) == {(PUBLISH_ADDRESS, "127.0.0.1")}
    assert COMPOSE_FILE.read_text().count("${") == len(found)


HTTP_SERVICES = ("ingest", "scoring", "pipeline", "webhooks")


@pytest.mark.parametrize("name", HTTP_SERVICES)
def test_each_http_service_reads_its_api_keys_from_the_secret(name: str) -> None:
    service = services()[name]
    assert service["secrets"] == ["api-keys"]
    env = compose_environment(service)
    assert env["LEADFLOW_API_KEYS_FILE"] == "/run/secrets/api-keys"
    assert "LEADFLOW_AUTH" not in env
    assert "LEADFLOW_API_KEYS" not in env


def test_the_key_file_is_a_template_the_services_refuse_until_filled(tmp_path: Path) -> None:
    """It ships without keys: the services listen on their container's every address, so
    they refuse to start until a line from `leadflow keys create` is added."""
    source = compose()["secrets"]["api-keys"]["file"]
    template = COMPOSE_FILE.parent / source
    assert "leadflow keys create" in template.read_text()
    settings = IngestSettings(host="0.0.0.0", api_keys_file=template)
    with pytest.raises(AuthConfigurationError, match="holds no key"):
        load_authenticator(settings)
    _, line = create_key("mailer", ["events:write"])
    filled = tmp_path / "api-keys"
    filled.write_text(f"{template.read_text()}{line}\n")
    keys = load_authenticator(IngestSettings(host="0.0.0.0", api_keys_file=filled)).keys
    assert [key.name for key in keys.values()] == ["mailer"]
