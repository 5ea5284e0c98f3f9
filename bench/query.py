"""query: the REST reads ops and CRMs make, with 1,000,000 leads in PostgreSQL.

The leads (a 30-day half-life, latest events over the last 90 days) are bulk-loaded with
COPY (asyncpg ``copy_records_to_table``) into a migrated database, with their engagement
in the stored form of :mod:`services.pipeline.decay`, then analysed; pipeline serves it
as a process with its consumer off. Each run sends, one after another (latency, not
throughput), ``GET /v1/leads?min_score=`` (a page of 100, the default; every other one
also with ``&stage=``), valued at the time of the request, and ``GET /v1/leads/{id}`` for
random known leads.

Baselines, in the same runs: the SQL of a listing by *stored* totals (one index range,
what leadflow did before it valued leads at the request's time) and the lookup by id, run
directly with asyncpg prepared statements; and the same SQL answered over HTTP by bare
Starlette + asyncpg (``bench/bare_query_app.py``), the same requests in the same order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

from bench.common import Measure, http_session, repeat
from bench.env import BenchEnv, Config
from bench.stats import Row, Summary, Target, percentile
from services.pipeline.decay import StoredEngagement
from services.pipeline.migrate import migrate

COLUMNS = (
    "lead_id", "stage", "fit", "engagement", "total", "as_of", "model_version",
    "score_sequence", "change_sequence", "updated_at", "decay_rate", "decay_sign", "decay_log2",
)  # fmt: skip
SELECT = "SELECT " + ", ".join(f"leads.{c}" for c in COLUMNS) + " FROM leads"
LIST_SQL = f"{SELECT} WHERE leads.total >= $1 ORDER BY leads.total DESC, leads.lead_id LIMIT $2"
STAGE_LIST_SQL = (
    f"{SELECT} WHERE leads.stage = $3 AND leads.total >= $1"
    " ORDER BY leads.total DESC, leads.lead_id LIMIT $2"
)
HALF_LIFE = 30 * 86400.0
GET_SQL = f"{SELECT} WHERE leads.lead_id = $1"
PAGE = 100
STAGES = (
    ["lead"] * 60
    + ["prospect"] * 25
    + ["opportunity"] * 10
    + ["customer"] * 3
    + ["disqualified"] * 2
)
FITS = [0, 10, 20, 30, 35, 45, 50, 55, 65, 75, 85]


def lead_rows(count: int, seed: int = 11) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for n in range(count):
        fit = float(rng.choice(FITS))
        engagement = round(rng.lognormvariate(2.0, 1.0), 3)
        as_of = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
        sequence = rng.randint(1, 60)
        stored = StoredEngagement.of(engagement, as_of, HALF_LIFE)
        yield (
            lead_id(n), rng.choice(STAGES), fit, engagement, fit + engagement, as_of,
            "default-1", sequence, rng.randint(1, 3), now, stored.rate, stored.sign, stored.log2,
        )  # fmt: skip


def lead_id(n: int) -> str:
    return f"lead-{n:07d}@company{n % 9973}.example.com"


async def load(url: str, count: int) -> float:
    """COPY ``count`` leads in; returns the seconds it took (loading and analysing)."""
    connection = await asyncpg.connect(url)
    started = time.perf_counter()
    try:
        rows = lead_rows(count)
        while chunk := [row for _, row in zip(range(100_000), rows, strict=False)]:
            await connection.copy_records_to_table("leads", records=chunk, columns=COLUMNS)
        await connection.execute("VACUUM ANALYZE leads")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=200_000, full=1_000_000)
    requests = config.size(quick=300, full=2000)
    libpq_url, url = await env.new_database("query")
    await migrate(url)
    load_seconds = await load(libpq_url, count)
    pipeline = env.start_service(
        "pipeline",
        {
            "LEADFLOW_DATABASE_URL": url,
            "LEADFLOW_PIPELINE_CONSUME": "false",
            "LEADFLOW_MIGRATE_ON_START": "false",
            "LEADFLOW_LOG_LEVEL": "WARNING",
        },
    )
    bare = env.start_module("bench.bare_query_app", {"BENCH_POSTGRES_URL": libpq_url})
    await env.wait_ready(pipeline, bare)
    rng = random.Random(5)
    scores = [rng.choice([10, 30, 50, 70, 90, 110]) for _ in range(requests)]
    stages = [
        None if n % 2 else rng.choice(["lead", "prospect", "opportunity"]) for n in range(requests)
    ]
    ids = [lead_id(rng.randrange(count)) for _ in range(requests)]
    samples: dict[str, list[dict[str, float]]] = {"leadflow": [], "asyncpg": [], "starlette": []}
    client = http_session(4)
    connection = await asyncpg.connect(libpq_url)

    def record(side: str, lists: list[float], gets: list[float]) -> float:
        samples[side].append(
            {
                "list_p50": percentile(lists, 50),
                "list_p99": percentile(lists, 99),
                "get_p50": percentile(gets, 50),
                "get_p99": percentile(gets, 99),
            }
        )
        return percentile(lists, 99)

    async def over_http(side: str, base: str) -> float:
        lists, gets = [], []
        for score, stage in zip(scores, stages, strict=True):
            query = f"min_score={score}" + ("" if stage is None else f"&stage={stage}")
            started = time.perf_counter()
            async with client.get(f"{base}/v1/leads?{query}") as response:
                body = await response.read()
                if response.status != 200 or not body:
                    raise RuntimeError(f"{side} answered {response.status}")
            lists.append((time.perf_counter() - started) * 1000)
        for lead in ids:
            started = time.perf_counter()
            async with client.get(f"{base}/v1/leads/{quote(lead, safe='@')}") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{side} answered {response.status}")
            gets.append((time.perf_counter() - started) * 1000)
        return record(side, lists, gets)

    async def leadflow() -> float:
        return await over_http("leadflow", pipeline.url)

    async def starlette() -> float:
        return await over_http("starlette", bare.url)

    async def raw() -> float:
        lists, gets = [], []
        list_statement = await connection.prepare(LIST_SQL)
        stage_statement = await connection.prepare(STAGE_LIST_SQL)
        get_statement = await connection.prepare(GET_SQL)
        for score, stage in zip(scores, stages, strict=True):
            started = time.perf_counter()
            if stage is None:
                await list_statement.fetch(float(score), PAGE + 1)
            else:
                await stage_statement.fetch(float(score), PAGE + 1, stage)
            lists.append((time.perf_counter() - started) * 1000)
        for lead in ids:
            started = time.perf_counter()
            if await get_statement.fetchrow(lead) is None:
                raise RuntimeError(f"{lead} is missing")
            gets.append((time.perf_counter() - started) * 1000)
        return record("asyncpg", lists, gets)

    try:
        sides: dict[str, Measure] = {"leadflow": leadflow, "starlette": starlette, "asyncpg": raw}
        await repeat("query", sides, config.runs, config.warmups)
    finally:
        await client.close()
        await connection.close()
        await env.stop(pipeline, bare)
    # the warm-ups were recorded too: keep only the measured runs
    measured = {side: runs[config.warmups :] for side, runs in samples.items()}
    extra = {"leads": count, "requests_per_endpoint": requests, "load_seconds": load_seconds}
    rows: list[Row] = []
    for key, metric in (
        ("list_p50", "GET /v1/leads?min_score=[&stage=] p50"),
        ("list_p99", "GET /v1/leads?min_score=[&stage=] p99"),
        ("get_p50", "GET /v1/leads/{id} p50"),
        ("get_p99", "GET /v1/leads/{id} p99"),
    ):
        rows.append(
            Row(
                "query",
                f"{metric} ({count:,} leads)",
                "ms",
                Summary([run[key] for run in measured["leadflow"]]),
                higher_is_better=False,
                baseline_name="same SQL, asyncpg",
                baseline=Summary([run[key] for run in measured["asyncpg"]]),
                target=Target("value_max", 50) if key == "list_p99" else None,
                extra=extra if not rows else {},
            )
        )
        rows.append(
            Row(
                "query",
                f"{metric} ({count:,} leads)",
                "ms",
                Summary([run[key] for run in measured["leadflow"]]),
                higher_is_better=False,
                baseline_name="Starlette + asyncpg",
                baseline=Summary([run[key] for run in measured["starlette"]]),
                target=Target("ratio_min", 0.6),
            )
        )
    return rows
