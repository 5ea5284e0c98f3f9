"""What each service started by ``leadflow run`` gets in its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.system import Ports, child_environment
from shared.cli import SERVICES, build_parser, run_ports

PARENT = {
    "PATH": "/usr/bin",
    "LEADFLOW_PORT": "9999",
    "LEADFLOW_INGEST_PORT": "18001",
    "LEADFLOW_LOG_FORMAT": "json",
    "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092",
}


def test_each_service_gets_its_own_port_and_the_local_broker() -> None:
    ports = Ports(kafka=19092, ingest=18001, scoring=18002, pipeline=18003, webhooks=18004)
    envs = {s: child_environment(PARENT, s, ports, Path("/d")) for s in SERVICES}
    assert {s: env["LEADFLOW_PORT"] for s, env in envs.items()} == {
        "ingest": "18001",
        "scoring": "18002",
        "pipeline": "18003",
        "webhooks": "18004",
    }
    for env in envs.values():
        assert env["LEADFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
        assert env["LEADFLOW_DATABASE_URL"] == "sqlite+aiosqlite:////d/leadflow.db"
        assert env["LEADFLOW_LOG_FORMAT"] == "json"  # the rest is passed on
        assert env["PATH"] == "/usr/bin"
        assert "LEADFLOW_INGEST_PORT" not in env  # run's own variables stay with run
        assert env["LEADFLOW_WEBHOOKS_DATABASE_URL"] == "sqlite+aiosqlite:////d/webhooks.db"


def test_a_database_url_of_the_parent_is_kept() -> None:
    parent = {**PARENT, "LEADFLOW_DATABASE_URL": "postgresql+asyncpg://db/leadflow"}
    env = child_environment(parent, "pipeline", Ports(9092, 8001, 8002, 8003), Path("/d"))
    assert env["LEADFLOW_DATABASE_URL"] == "postgresql+asyncpg://db/leadflow"


def test_run_takes_its_ports_from_options_then_variables_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_SCORING_PORT", "18002")
    monkeypatch.setenv("LEADFLOW_PORT", "9999")  # a service's variable: run ignores it
    args = build_parser().parse_args(["run", "--ingest-port", "18001"])
    assert run_ports(args) == Ports(kafka=9092, ingest=18001, scoring=18002, pipeline=8003)
    assert (
        run_ports(build_parser().parse_args(["run", "--webhooks-port", "18004"])).webhooks == 18004
    )


def test_a_bad_port_variable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_INGEST_PORT", "eighty")
    with pytest.raises(SystemExit, match="leadflow run: LEADFLOW_INGEST_PORT: "):
        run_ports(build_parser().parse_args(["run"]))
