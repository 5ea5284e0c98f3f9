"""Scaling out by partitions on one machine: 6 partitions, 3 scoring and 2 pipeline processes.

One scoring process is stopped in the middle of the stream; the group hands
its partitions to the others, and the results still equal the pure model.
"""

from __future__ import annotations

import operator
from functools import partial
from pathlib import Path

import pytest

from devtools.broker import LocalKafka
from devtools.synthetic import synthetic_stream
from tests.faults.deployment import (
    Deployment,
    Platform,
    assert_stage_changes_exactly_once,
    wait_until_served,
)
from tests.postgres import EmbeddedPostgres
from tests.reference import reference
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


async def test_three_scoring_and_two_pipeline_processes_on_six_partitions(
    kafka: LocalKafka, tmp_path: Path, private_postgres: EmbeddedPostgres
) -> None:
    deployment = Deployment(kafka, private_postgres.url, tmp_path, partitions=6)
    await deployment.create_topics()
    events = list(synthetic_stream(leads=600, events_per_lead=15, seed=50, run_id="scale"))
    ingest = deployment.start("ingest")
    scorers = [deployment.start("scoring") for _ in range(3)]
    pipelines = [deployment.start("pipeline") for _ in range(2)]
    platform = Platform(ingest.url)
    try:
        half = len(events) // 2
        await platform.post_all(events[:half], batch_size=250)
        await eventually(deployment.scored, partial(operator.le, len(events) // 4), timeout=120)
        scorers[0].stop()  # a scale-down (SIGTERM): its partitions move to the other two
        await platform.post_all(events[half:], batch_size=250)

        expected = reference(platform.accepted)
        for pipeline in pipelines:  # both replicas serve the same database
            await wait_until_served(pipeline.url, expected)
        await assert_stage_changes_exactly_once(deployment, pipelines[0].url, expected)
        assert [s.running for s in scorers] == [False, True, True]
        for scorer in scorers:  # each one did own partitions: the group spread the work
            assert scorer.log_file is not None
            assert "took " in scorer.log_file.read_text()
    finally:
        await platform.close()
        deployment.stop_all()
