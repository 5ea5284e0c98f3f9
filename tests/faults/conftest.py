"""Fault-injection fixtures: a deployment of real processes, torn down whatever happens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.broker import LocalKafka
from tests.faults.deployment import Deployment


@pytest.fixture
async def deployment(kafka: LocalKafka, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Topics of its own on the session broker, SQLite; start the services you need."""
    deployed = Deployment(kafka, f"sqlite+aiosqlite:///{tmp_path / 'leadflow.db'}", tmp_path)
    await deployed.create_topics()
    try:
        yield deployed
    finally:
        deployed.stop_all()
