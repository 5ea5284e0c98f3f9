"""analytics: the funnel analytics routes over 1,000,000 leads and over 3,000,000 stage changes.

The leads and their histories (a year of them, three changes a lead on average, with
sources, skipped stages, disqualifications and recycled leads) are bulk-loaded with
COPY (asyncpg ``copy_records_to_table``) into a migrated PostgreSQL database, each
change with its ``left_at`` and stay columns; the journeys are then derived by the
statement migration 0005 backfills with
(:func:`services.pipeline.journeys.upsert_journeys`), and the spans and summaries by
those of migration 0006
(:func:`services.pipeline.analytics_summaries.rebuild_statements`), each timed apart.
The loaded database is kept for the next run with the same parameters
(:mod:`bench.datasets`); the routes' ranges are taken from the moment it was built.
Pipeline serves it as a process with its consumer off. Each run sends every route's
requests one after another (latency, not throughput): unbounded, and over the last 30
days, the ranges a dashboard asks for.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

from bench.common import http_session, repeat
from bench.datasets import Dataset
from bench.env import BenchEnv, Config
from bench.stats import Row, Summary, Target, percentile, write
from services.pipeline import analytics_summaries, journeys
from services.pipeline.analytics import stay_bucket, stay_seconds
from services.pipeline.migrate import migrate
from shared.database import create_engine

LEAD_COLUMNS = (
    "lead_id", "stage", "fit", "engagement", "total", "as_of", "model_version",
    "score_sequence", "change_sequence", "updated_at",
)  # fmt: skip
CHANGE_COLUMNS = (
    "lead_id", "sequence", "change_id", "from_stage", "to_stage", "reason", "trigger_event_id",
    "occurred_at", "fit", "engagement", "total", "model_version", "recorded_at", "source",
    "left_at", "stay_seconds", "stay_bucket",
)  # fmt: skip
SOURCES = ["webinar", "website", "ads", "referral", "events", None]
CHANGES_PER_LEAD = [1] * 22 + [2] * 20 + [3] * 15 + [4] * 21 + [5] * 13 + [6] * 9
"""A little over three on average, so that the year holds over 3,000,000 changes once the
histories cut short by the present are counted."""
FORWARD = ["lead", "prospect", "opportunity", "customer"]
SPAN = timedelta(days=365)
SEED = 17


def next_stage(rng: random.Random, stage: str) -> str:
    """Mostly one step on, sometimes two, sometimes out (and back to lead from out)."""
    if stage == "disqualified":
        return "lead"
    if stage == "customer" or rng.random() < 0.12:
        return "disqualified"
    rank = FORWARD.index(stage)
    return FORWARD[min(3, rank + (2 if rng.random() < 0.15 else 1))]


def histories(
    count: int, now: datetime, seed: int = SEED
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """Each lead's row and its changes' rows, as the pipeline would have recorded them."""
    rng = random.Random(seed)
    start = now - SPAN
    for n in range(count):
        lead_id = f"lead-{n:07d}@company{n % 9973}.example.com"
        at = start + timedelta(seconds=rng.uniform(0, SPAN.total_seconds()))
        source = rng.choice(SOURCES)
        stage: str | None = None
        rows: list[list[Any]] = []
        for sequence in range(1, rng.choice(CHANGES_PER_LEAD) + 1):
            if at > now:
                break
            to_stage = "lead" if stage is None else next_stage(rng, stage)
            if rows:  # the previous stay ends here
                seconds = stay_seconds(rows[-1][7], at)
                rows[-1][-3:] = [at, seconds, stay_bucket(seconds)]
            rows.append(
                [
                    lead_id, sequence, f"{lead_id}#{sequence}", stage, to_stage, "bench",
                    f"{lead_id}/{sequence}", at, 30.0, 20.0, 50.0, "default-1", at,
                    source if sequence == 1 else rng.choice(SOURCES), None, None, None,
                ]
            )  # fmt: skip
            stage = to_stage
            at += timedelta(seconds=rng.lognormvariate(12.5, 1.2))  # a median of ~3 days
        lead = (lead_id, stage, 30.0, 20.0, 50.0, None, "default-1", None, len(rows), now)
        yield lead, [tuple(row) for row in rows]


async def load(libpq_url: str, url: str, count: int, now: datetime) -> dict[str, float]:
    """COPY the leads and changes in, derive the journeys; the seconds each step took."""
    connection = await asyncpg.connect(libpq_url)
    started = time.perf_counter()
    changes = 0
    try:
        generated = histories(count, now)
        while chunk := [item for _, item in zip(range(50_000), generated, strict=False)]:
            rows = [row for _, lead_changes in chunk for row in lead_changes]
            changes += len(rows)
            await connection.copy_records_to_table(
                "leads", records=[lead for lead, _ in chunk], columns=LEAD_COLUMNS
            )
            await connection.copy_records_to_table(
                "stage_changes", records=rows, columns=CHANGE_COLUMNS
            )
        copied = time.perf_counter()
        engine = create_engine(url)
        try:
            async with engine.begin() as db:
                await db.execute(journeys.upsert_journeys("postgresql", None))
            derived = time.perf_counter()
            async with engine.begin() as db:
                # the stay columns came with the rows, as the pipeline computes them
                for statement in analytics_summaries.rebuild_statements("postgresql", stays=False):
                    await db.execute(statement)
        finally:
            await engine.dispose()
        summarised = time.perf_counter()
    finally:
        await connection.close()
    await analyse(libpq_url)
    return {
        "stage_changes": changes,
        "copy_seconds": copied - started,
        "journeys_seconds": derived - copied,
        "summaries_seconds": summarised - derived,
        "analyse_seconds": time.perf_counter() - summarised,
    }


async def analyse(libpq_url: str) -> None:
    connection = await asyncpg.connect(libpq_url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def routes(now: datetime) -> dict[str, str]:
    month = quote((now - timedelta(days=30)).isoformat().replace("+00:00", "Z"))
    return {
        "funnel": "/v1/funnel",
        "funnel, 30 days, by source": f"/v1/funnel?from={month}&by=source",
        "time-in-stage": "/v1/analytics/time-in-stage",
        "time-in-stage, 30 days": f"/v1/analytics/time-in-stage?from={month}",
        "velocity": "/v1/analytics/velocity",
        "velocity, 30 days": f"/v1/analytics/velocity?from={month}",
        "cohorts by week": "/v1/analytics/cohorts?period=week",
        "cohorts by day, 30 days": f"/v1/analytics/cohorts?period=day&from={month}",
        "stage-changes by day": "/v1/analytics/stage-changes?interval=day",
        "stage-changes by hour, 30 days": f"/v1/analytics/stage-changes?interval=hour&from={month}",
    }


DATASET_VERSION = 2
"""Raise it when :func:`histories` or :func:`load` changes the rows they make."""


async def revision(libpq_url: str) -> str:
    connection = await asyncpg.connect(libpq_url)
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()


async def built_dataset(env: BenchEnv, config: Config, count: int) -> tuple[Dataset, datetime]:
    """The loaded database, from the cache when an earlier run built it with these
    parameters; its schema upgraded to head either way. Returns it and its ``now``."""
    parameters = {"leads": count, "seed": SEED, "version": DATASET_VERSION}
    dataset = await env.dataset("analytics", parameters, fresh=config.fresh_data)
    if (cached := dataset.meta) is not None:
        before = await revision(dataset.libpq_url)
        started = time.perf_counter()
        try:
            await migrate(dataset.url)
        except Exception as error:  # a revision this code does not know: build anew
            write(f"  the cached dataset cannot be upgraded ({error!r}): building it anew")
            dataset.stop()
            dataset = await env.dataset("analytics", parameters, fresh=True)
        else:
            after = await revision(dataset.libpq_url)
            if after != before:
                await analyse(dataset.libpq_url)
                meta = dict(cached)
                meta["upgrades"] = [
                    *cached.get("upgrades", []),
                    {"from": before, "to": after, "seconds": time.perf_counter() - started},
                ]
                dataset.save(meta)
    if dataset.meta is None:
        now = datetime.now(UTC).replace(microsecond=0)
        await migrate(dataset.url)
        loaded = await load(dataset.libpq_url, dataset.url, count, now)
        dataset.save({**parameters, "now": now.isoformat(), "loaded": loaded,
                      "revision": await revision(dataset.libpq_url)})  # fmt: skip
    assert dataset.meta is not None
    return dataset, datetime.fromisoformat(dataset.meta["now"])


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=100_000, full=1_000_000)
    requests = config.size(quick=10, full=20)
    dataset, now = await built_dataset(env, config, count)
    assert dataset.meta is not None
    loaded = dataset.meta["loaded"]
    url = dataset.url
    pipeline = env.start_service(
        "pipeline",
        {
            "LEADFLOW_DATABASE_URL": url,
            "LEADFLOW_PIPELINE_CONSUME": "false",
            "LEADFLOW_MIGRATE_ON_START": "false",
            "LEADFLOW_LOG_LEVEL": "WARNING",
        },
    )
    await env.wait_ready(pipeline)
    paths = routes(now)
    samples: list[dict[str, tuple[float, float]]] = []
    client = http_session(1)

    async def leadflow() -> float:
        measured: dict[str, tuple[float, float]] = {}
        for name, path in paths.items():
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                async with client.get(f"{pipeline.url}{path}") as response:
                    body = await response.read()
                    if response.status != 200 or not body:
                        raise RuntimeError(f"pipeline answered {response.status} to {path}")
                times.append((time.perf_counter() - started) * 1000)
            measured[name] = (percentile(times, 50), percentile(times, 99))
        samples.append(measured)
        return max(p99 for _, p99 in measured.values())

    try:
        await repeat("analytics", {"leadflow": leadflow}, config.runs, config.warmups)
    finally:
        await client.close()
        await env.stop(pipeline)
    measured = samples[config.warmups :]
    extra = {
        "leads": count,
        "requests_per_route": requests,
        "dataset": str(dataset.folder),
        "dataset_now": now.isoformat(),
        "upgrades": dataset.meta.get("upgrades", []),
        **loaded,
    }
    rows: list[Row] = []
    for name in paths:
        for index, key in ((0, "p50"), (1, "p99")):
            rows.append(
                Row(
                    "analytics",
                    f"GET {name} {key} ({count:,} leads, {loaded['stage_changes']:,} changes)",
                    "ms",
                    Summary([run[name][index] for run in measured]),
                    higher_is_better=False,
                    target=Target("value_max", 200.0) if key == "p99" else None,
                    extra=extra if not rows else {},
                )
            )
    return rows
