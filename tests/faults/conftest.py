"""Fault-injection fixtures: a deployment of real processes, torn down whatever happens."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.broker import LocalKafka
from tests.faults.deployment import Deployment
from tests.postgres import EmbeddedPostgres


@pytest.fixture
async def deployment(kafka: LocalKafka, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Topics of its own on the session broker, SQLite; start the services you need."""
    deployed = Deployment(kafka, f"sqlite+aiosqlite:///{tmp_path / 'leadflow.db'}", tmp_path)
    await deployed.create_topics()
    try:
        yield deployed
    finally:
        deployed.stop_all()


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    root = Path(tempfile.mkdtemp(prefix="leadflow-pg-", dir="/tmp"))
    server = EmbeddedPostgres(root)
    try:
        yield server
    finally:
        server.remove()
        shutil.rmtree(root, ignore_errors=True)
