"""Fixtures for the whole suite: the real broker, once per session, and isolated topics.

The broker starts only when a test asks for it, so the unit layer stays fast.
Tests isolate themselves by a unique topic namespace instead of restarting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import LocalKafka, free_port
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(Path(tmp_path_factory.mktemp("kafka")), port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def kafka_settings(kafka: LocalKafka) -> LeadflowSettings:
    """Settings pointing at the session broker, with topics no other test uses."""
    settings = LeadflowSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}",
    )
    await create_topics(settings, partitions=3)
    return settings
