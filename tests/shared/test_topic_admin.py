"""``leadflow topics`` for production, and scoring refusing topics that do not fit together."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from devtools.broker import LocalKafka
from services.scoring.model import load_model
from services.scoring.settings import ScoringSettings
from services.scoring.worker import ScoringWorker
from shared.background import BackgroundLoop
from shared.cli import main
from shared.kafka import make_admin
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics
from shared.topics import Topics
from tests.waiting import eventually


def test_events_are_kept_forever_and_the_state_topics_compacted_by_default() -> None:
    specs = {spec.name: spec.config for spec in Topics().specs()}
    assert specs["leadflow.events"] == {"retention.ms": "-1"}
    assert specs["leadflow.scores"]["cleanup.policy"] == "compact"
    assert specs["leadflow.scoring-state"]["cleanup.policy"] == "compact"
    shorter = LeadflowSettings(events_retention_ms=90 * 24 * 3600 * 1000).topics
    assert shorter.specs()[0].config == {"retention.ms": "7776000000"}


class FlakyLoop:
    """Fails to start ``failures`` times the way a loop does when Kafka refuses it."""

    built = 0

    def __init__(self, failures: int) -> None:
        FlakyLoop.built += 1
        self.failures = failures
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        if FlakyLoop.built <= self.failures:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, 0)]")
        self.started.set()
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def kafka_reachable(self) -> bool:
        return True


async def test_a_loop_that_cannot_start_is_built_again_after_a_delay_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    FlakyLoop.built = 0
    background = BackgroundLoop("flaky", lambda: FlakyLoop(failures=2))
    background.reconnection.first_delay = 0.01
    background.start()
    try:
        await eventually(lambda: _consuming(background), bool, timeout=10, interval=0.01)
        assert FlakyLoop.built == 3
        assert background.alive()
    finally:
        await background.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("flaky")]
    assert lines == [
        "flaky cannot use Kafka: KafkaConnectionError: Unable to bootstrap from "
        "[('127.0.0.1', 1, 0)]; retrying with backoff",
        "flaky reaches Kafka again",
    ]


async def _consuming(background: BackgroundLoop[Any]) -> bool:
    return background.consuming()


@pytest.mark.integration
async def test_topics_are_created_with_their_settings_and_existing_ones_left_alone(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = kafka_settings.model_copy(update={"topic_namespace": f"m{uuid.uuid4().hex[:8]}"})
    first = await create_topics(settings, partitions=2, min_insync_replicas=1)
    assert [spec.name for spec in first.created] == [s.name for s in settings.topics.specs()]
    assert first.existing == []
    again = await create_topics(settings, partitions=5, min_insync_replicas=1)
    assert again.created == []
    assert again.existing == [s.name for s in settings.topics.specs()]

    admin = make_admin(settings, name="test")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([settings.topics.events])
        assert len(described["partitions"]) == 2  # not altered by the second run
        resources = [ConfigResource(ConfigResourceType.TOPIC, settings.topics.events)]
        (response,) = await admin.describe_configs(resources)
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    finally:
        await admin.close()
    assert configs["retention.ms"] == "-1"
    assert configs["min.insync.replicas"] == "1"


@pytest.mark.integration
def test_leadflow_topics_says_what_it_created_and_what_it_left_alone(
    kafka: LocalKafka, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = f"c{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LEADFLOW_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("LEADFLOW_TOPIC_NAMESPACE", namespace)
    arguments = ["topics", "--partitions", "2", "--min-insync-replicas", "1"]
    assert main(arguments) == 0
    created = capsys.readouterr().out
    assert (
        f"created {namespace}.events: 2 partitions, replication factor 1, "
        "min.insync.replicas=1, retention.ms=-1"
    ) in created
    assert f"created {namespace}.scoring-state: 2 partitions" in created
    assert main(arguments) == 0
    second = capsys.readouterr().out
    assert f"{namespace}.events exists already: left as it is, not altered" in second
    assert "created" not in second


@pytest.mark.integration
async def test_scoring_refuses_an_events_topic_and_changelog_of_different_sizes(
    kafka_settings: LeadflowSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ScoringSettings(
        **{**kafka_settings.model_dump(), "topic_namespace": f"p{uuid.uuid4().hex[:8]}"}
    )
    topics = settings.topics
    admin = make_admin(settings, name="test")
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.events, 3, 1), NewTopic(topics.scoring_state, 2, 1)]
        )
    finally:
        await admin.close()
    model = load_model(settings.scoring_model)
    worker = BackgroundLoop("scoring-worker", lambda: ScoringWorker(settings, model), settings)
    worker.start()
    try:
        await eventually(lambda: _dead(worker), bool, timeout=30)
    finally:
        await worker.stop()
    # (a first try may find the new topics not known to every broker yet: it retries)
    (line,) = [r for r in caplog.records if "cannot start" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        f"scoring-worker cannot start: {topics.events} has 3 partitions but the scoring "
        f"changelog {topics.scoring_state} has 2: scoring keeps the state of events partition "
        "p in changelog partition p, so both need the same count (see deploy/README.md, How "
        "many partitions)"
    )
    assert line.exc_info is None


async def _dead(background: BackgroundLoop[Any]) -> bool:
    return not background.alive()
