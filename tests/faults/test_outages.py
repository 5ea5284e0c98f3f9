"""The broker and the database go away and come back: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.broker import LocalKafka, free_port
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


async def status_of(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url)).status_code
    except httpx.HTTPError:
        return 0


async def then_post(
    before: asyncio.Task[None], platform: Platform, events: list[dict[str, Any]]
) -> None:
    """``events`` once ``before`` (the same platform's earlier posts) is done: in order."""
    await before
    await platform.post_all(events, batch_size=50, pause=0.05)


async def test_broker_restart_while_clients_post(tmp_path: Path) -> None:
    """Four platforms post concurrently; the broker stops and starts under them."""
    kafka = LocalKafka(tmp_path / "kafka", port=free_port())
    kafka.start()
    deployment = Deployment(kafka, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    platforms: list[Platform] = []
    try:
        await deployment.create_topics()
        ingest = deployment.start("ingest")
        deployment.start("scoring")
        pipeline = deployment.start("pipeline")
        streams = [
            list(synthetic_stream(leads=100, events_per_lead=10, seed=20 + n, run_id=f"c{n}"))
            for n in range(4)
        ]
        platforms = [Platform(ingest.url, retry_for=180) for _ in streams]
        # Each platform posts the first half of its stream while the broker goes down, and
        # the rest after it is down, so requests meet the outage whatever the timing.
        first = [
            asyncio.create_task(p.post_all(s[: len(s) // 2], batch_size=50, pause=0.05))
            for p, s in zip(platforms, streams, strict=True)
        ]
        await eventually(deployment.scored, lambda n: n >= 500, timeout=120)
        await asyncio.to_thread(kafka.stop)
        await eventually(
            lambda: status_of(f"{ingest.url}/readyz"), lambda code: code == 503, timeout=30
        )
        rest = [
            asyncio.create_task(then_post(task, p, s[len(s) // 2 :]))
            for task, p, s in zip(first, platforms, streams, strict=True)
        ]

        async def outage_seen() -> bool:
            return any(503 in p.statuses for p in platforms)

        await eventually(outage_seen, lambda seen: seen, timeout=60)
        await asyncio.to_thread(kafka.start)
        await asyncio.gather(*rest)

        statuses = {code for p in platforms for code in p.statuses}
        assert statuses <= {202, 503}, f"ingest answered {statuses}"
        assert 503 in statuses  # the outage was seen by clients
        accepted = [event for p in platforms for event in p.accepted]
        assert len(accepted) == sum(len(s) for s in streams)
        expected = reference(accepted)  # leads are disjoint per platform: order is per client
        await wait_until_served(pipeline.url, expected, timeout=300)
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)
    finally:
        for platform in platforms:
            await platform.close()
        deployment.stop_all()
        kafka.stop()


async def test_database_outage_under_the_pipeline(
    kafka: LocalKafka, tmp_path: Path, private_postgres: EmbeddedPostgres
) -> None:
    """PostgreSQL stops: pipeline turns not-ready, loses nothing, and catches up after."""
    deployment = Deployment(kafka, private_postgres.url, tmp_path)
    await deployment.create_topics()
    events = list(synthetic_stream(leads=300, events_per_lead=10, seed=30, run_id="dbout"))
    half = len(events) // 2
    ingest = deployment.start("ingest")
    deployment.start("scoring")
    pipeline = deployment.start("pipeline")
    platform = Platform(ingest.url)
    try:
        await platform.post_all(events[:half])
        await wait_until_served(pipeline.url, reference(platform.accepted))

        await asyncio.to_thread(private_postgres.stop)
        await platform.post_all(events[half:])
        await eventually(deployment.scored, lambda n: n >= len(events), timeout=120)
        not_ready = await eventually(
            lambda: status_of(f"{pipeline.url}/readyz"), lambda code: code == 503, timeout=60
        )
        assert not_ready == 503
        assert pipeline.running  # waiting for the database, not crashed
        async with httpx.AsyncClient(base_url=pipeline.url, timeout=10) as client:
            down = await client.get("/v1/leads")
        assert down.status_code == 503  # a retryable answer, not a 500
        assert "Retry-After" in down.headers

        await asyncio.to_thread(private_postgres.start)
        expected = reference(platform.accepted)
        await wait_until_served(pipeline.url, expected)
        await eventually(
            lambda: status_of(f"{pipeline.url}/readyz"), lambda code: code == 200, timeout=60
        )
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)
    finally:
        await platform.close()
        deployment.stop_all()
