"""pipeline: stage changes and score updates persisted per second on PostgreSQL.

The records are what scoring emits for the bench stream (the pure domain applied to it),
in that order, cut into batches of the consumer's size (``pipeline_batch_records``, 500),
and written by :func:`services.pipeline.store.record_batch`, one transaction per batch.

Baseline: the same rows written by asyncpg ``executemany`` of hand-written
INSERT ... ON CONFLICT statements (the same conflict rules, the same de-duplication,
one transaction per batch), from rows prepared before the clock starts: the raw limit
of PostgreSQL for this work on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bench.common import repeat, run_id
from bench.env import BenchEnv, Config
from bench.payload import bench_events
from bench.stats import Row, Summary, Target
from services.pipeline.migrate import migrate
from services.pipeline.store import record_batch
from services.scoring.lead import LeadState
from services.scoring.model import load_model
from services.scoring.scoring import apply_event
from shared.database import Database
from shared.events import Event, ScoreUpdate, StageChange

BATCH_RECORDS = 500
TABLES = (
    "stage_change_hours, stage_change_days, funnel_days, stay_days, span_days, "
    "journey_spans, lead_journeys, score_breakdowns, stage_changes, leads"
)

Batch = tuple[list[StageChange], list[ScoreUpdate]]


def scored_records(count: int) -> list[StageChange | ScoreUpdate]:
    """About ``count`` outputs of scoring for the bench stream, in the order emitted."""
    model = load_model()
    states: dict[str, LeadState] = {}
    outputs: list[StageChange | ScoreUpdate] = []
    for raw in bench_events(max(1, int(count / 1.1)), run_id=run_id()):
        event = Event.model_validate(raw)
        outcome = apply_event(states.get(event.lead_id), event, model)
        if outcome.skipped is not None:
            continue
        states[event.lead_id] = outcome.state
        if outcome.stage_change is not None:
            outputs.append(outcome.stage_change)
        if outcome.score_update is not None:
            outputs.append(outcome.score_update)
    return outputs[:count]


def batches(records: Sequence[StageChange | ScoreUpdate]) -> list[Batch]:
    result = []
    for start in range(0, len(records), BATCH_RECORDS):
        chunk = records[start : start + BATCH_RECORDS]
        result.append(
            (
                [r for r in chunk if isinstance(r, StageChange)],
                [r for r in chunk if isinstance(r, ScoreUpdate)],
            )
        )
    return result


# --- the baseline: the same rows, hand-written SQL ------------------------------------------

LEADS_FROM_CHANGES = """
INSERT INTO leads (lead_id, stage, fit, engagement, total, as_of, model_version,
                   score_sequence, change_sequence, updated_at)
VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL, $7, $8)
ON CONFLICT (lead_id) DO UPDATE SET
  stage = CASE WHEN leads.score_sequence IS NULL THEN excluded.stage ELSE leads.stage END,
  fit = CASE WHEN leads.score_sequence IS NULL THEN excluded.fit ELSE leads.fit END,
  engagement = CASE WHEN leads.score_sequence IS NULL THEN excluded.engagement
               ELSE leads.engagement END,
  total = CASE WHEN leads.score_sequence IS NULL THEN excluded.total ELSE leads.total END,
  model_version = CASE WHEN leads.score_sequence IS NULL THEN excluded.model_version
                  ELSE leads.model_version END,
  change_sequence = excluded.change_sequence,
  updated_at = excluded.updated_at
WHERE leads.change_sequence IS NULL OR excluded.change_sequence > leads.change_sequence
"""
LEADS_FROM_SCORES = """
INSERT INTO leads (lead_id, stage, fit, engagement, total, as_of, model_version,
                   score_sequence, change_sequence, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)
ON CONFLICT (lead_id) DO UPDATE SET
  stage = excluded.stage, fit = excluded.fit, engagement = excluded.engagement,
  total = excluded.total, as_of = excluded.as_of, model_version = excluded.model_version,
  score_sequence = excluded.score_sequence, updated_at = excluded.updated_at
WHERE leads.score_sequence IS NULL OR excluded.score_sequence > leads.score_sequence
"""
STAGE_CHANGES = """
INSERT INTO stage_changes (lead_id, sequence, change_id, from_stage, to_stage, reason,
                           trigger_event_id, occurred_at, fit, engagement, total,
                           model_version, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING
"""
BREAKDOWNS = """
INSERT INTO score_breakdowns (lead_id, sequence, fit, engagement, total, as_of,
                              model_version, breakdown, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (lead_id) DO UPDATE SET
  sequence = excluded.sequence, fit = excluded.fit, engagement = excluded.engagement,
  total = excluded.total, as_of = excluded.as_of, model_version = excluded.model_version,
  breakdown = excluded.breakdown, updated_at = excluded.updated_at
WHERE excluded.sequence > score_breakdowns.sequence
"""

RawBatch = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]


def raw_rows(batch: Batch, now: datetime) -> RawBatch:
    """The rows record_batch writes for a batch (same de-duplication), as tuples."""
    changes, updates = batch
    unique: dict[tuple[str, int], StageChange] = {}
    for change in changes:
        unique.setdefault((change.lead_id, change.sequence), change)
    ordered = [unique[key] for key in sorted(unique)]
    newest_changes: dict[str, StageChange] = {}
    for change in ordered:
        held = newest_changes.get(change.lead_id)
        if held is None or change.sequence > held.sequence:
            newest_changes[change.lead_id] = change
    newest_scores: dict[str, ScoreUpdate] = {}
    for update in updates:
        kept = newest_scores.get(update.lead_id)
        if kept is None or update.sequence > kept.sequence:
            newest_scores[update.lead_id] = update
    scores = [newest_scores[lead] for lead in sorted(newest_scores)]
    lead_changes = [
        (c.lead_id, c.to_stage.value, c.score.fit, c.score.engagement, c.score.total,
         c.model_version, c.sequence, now)
        for c in (newest_changes[lead] for lead in sorted(newest_changes))
    ]  # fmt: skip
    lead_scores = [
        (s.lead_id, s.stage.value, s.fit, s.engagement, s.total, s.as_of, s.model_version,
         s.sequence, now)
        for s in scores
    ]  # fmt: skip
    change_rows = [
        (c.lead_id, c.sequence, c.change_id, None if c.from_stage is None else c.from_stage.value,
         c.to_stage.value, c.reason, c.trigger_event_id, c.occurred_at, c.score.fit,
         c.score.engagement, c.score.total, c.model_version, now)
        for c in ordered
    ]  # fmt: skip
    breakdown_rows = [
        (s.lead_id, s.sequence, s.fit, s.engagement, s.total, s.as_of, s.model_version,
         orjson.dumps([item.model_dump(mode="json") for item in s.breakdown]).decode(), now)
        for s in scores
    ]  # fmt: skip
    return lead_changes, lead_scores, change_rows, breakdown_rows


async def raw_write(connection: asyncpg.Connection, rows: RawBatch) -> None:
    lead_changes, lead_scores, change_rows, breakdown_rows = rows
    async with connection.transaction():
        if lead_changes:
            await connection.executemany(LEADS_FROM_CHANGES, lead_changes)
        if lead_scores:
            await connection.executemany(LEADS_FROM_SCORES, lead_scores)
        if change_rows:
            await connection.executemany(STAGE_CHANGES, change_rows)
        if breakdown_rows:
            await connection.executemany(BREAKDOWNS, breakdown_rows)


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=15_000, full=60_000)
    records = scored_records(count)
    work = batches(records)
    libpq_url, url = await env.new_database("pipeline")
    await migrate(url)
    database = Database.connect(url)
    connection = await asyncpg.connect(libpq_url)
    now = datetime.now(UTC)
    prepared = [raw_rows(batch, now) for batch in work]

    async def empty() -> None:
        await connection.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
        await connection.execute("CHECKPOINT")

    async def leadflow() -> float:
        await empty()
        started = time.perf_counter()
        for changes, updates in work:
            await record_batch(database.sessions, changes, updates)
        return len(records) / (time.perf_counter() - started)

    async def raw() -> float:
        await empty()
        started = time.perf_counter()
        for rows in prepared:
            await raw_write(connection, rows)
        return len(records) / (time.perf_counter() - started)

    try:
        results = await repeat(
            "pipeline", {"leadflow": leadflow, "asyncpg": raw}, config.runs, config.warmups
        )
        persisted = await connection.fetchval("SELECT count(*) FROM stage_changes")
    finally:
        await connection.close()
        await database.dispose()
    changes = sum(1 for r in records if isinstance(r, StageChange))
    return [
        Row(
            "pipeline",
            "stage changes + score updates persisted (500/batch)",
            "records/s",
            Summary(results["leadflow"]),
            baseline_name="asyncpg executemany",
            baseline=Summary(results["asyncpg"]),
            target=Target("ratio_min", 0.5),
            extra={
                "records_per_run": len(records),
                "stage_changes": changes,
                "score_updates": len(records) - changes,
                "batches": len(work),
                "stage_changes_in_db_after_last_run": persisted,
            },
        )
    ]
