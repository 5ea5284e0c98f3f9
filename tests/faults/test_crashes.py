"""Processes killed with SIGKILL mid-stream: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import operator
from functools import partial

import pytest

from devtools.synthetic import synthetic_stream
from tests.faults.deployment import (
    Deployment,
    Platform,
    assert_stage_changes_exactly_once,
    wait_until_served,
)
from tests.reference import reference
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


async def test_scoring_killed_repeatedly_while_events_flow(deployment: Deployment) -> None:
    """20,000+ events across 1,000 leads; scoring SIGKILLed at 25, 50 and 75 % of the
    stream (by its committed offsets, so each kill lands mid-work) and restarted."""
    events = list(synthetic_stream(leads=1000, events_per_lead=22, seed=11, run_id="kill"))
    assert len(events) >= 20_000
    ingest = deployment.start("ingest")
    scoring = deployment.start("scoring")
    pipeline = deployment.start("pipeline")
    platform = Platform(ingest.url)
    kills: list[int] = []
    try:
        posting = asyncio.create_task(platform.post_all(events, batch_size=250, pause=0.05))
        for share in (0.25, 0.5, 0.75):
            reached = partial(operator.le, share * len(events))  # share * len <= scored
            progress = await eventually(deployment.scored, reached, timeout=180)
            scoring.kill()
            kills.append(progress)
            deployment.restart(scoring)
        await posting
        expected = reference(platform.accepted)
        await wait_until_served(pipeline.url, expected, timeout=400)
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)
    finally:
        await platform.close()
    assert len(kills) == 3
    assert len(platform.accepted) == len(events)


async def test_pipeline_killed_mid_batch_and_restarted(deployment: Deployment) -> None:
    events = list(synthetic_stream(leads=400, events_per_lead=15, seed=12, run_id="pkill"))
    ingest = deployment.start("ingest")
    deployment.start("scoring")
    pipeline = deployment.start("pipeline")
    platform = Platform(ingest.url)
    try:
        await platform.post_all(events)
        for _ in range(3):
            await asyncio.to_thread(pipeline.wait_ready)
            pipeline.kill()
            deployment.restart(pipeline)
        await asyncio.to_thread(pipeline.wait_ready)
        expected = reference(platform.accepted)
        await wait_until_served(pipeline.url, expected)
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)
    finally:
        await platform.close()
