"""``leadflow rescore``: what a new model would do to every lead, and making it live.

The dry run touches nothing live. It reads ``leadflow.scores`` to its end (each lead's
latest record: what the pipeline and CRMs hold now) and replays every partition of
``leadflow.events`` from its earliest offset under the new model, in memory, through the
worker's own batch code (:mod:`services.scoring.replay`). Its consumers are assigned, join
no group and commit nothing; it writes to no topic. Partitions replay side by side in
processes of their own (scoring is CPU-bound), then :mod:`services.scoring.rescore_report`
compares the two.

Publishing writes the model to ``leadflow.models`` and a switch record into every
partition of ``leadflow.events`` (:mod:`services.scoring.model_topic`); each worker then
rescores its partitions in one transaction each (docs/architecture.md §5.9), and this
command waits until the scoring group's committed offsets have passed every switch.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import TopicPartition

from services.scoring.event_history import PartitionSpan, partition_spans, read_until
from services.scoring.model import ScoringModel
from services.scoring.model_topic import read_publications, write_publication, write_switches
from services.scoring.publication import Publication, Switch
from services.scoring.replay import Replay
from services.scoring.rescore_report import LeadScore, build_report
from services.scoring.settings import ScoringSettings
from shared.kafka import PARTITIONER, encode_key, make_admin, make_consumer
from shared.topic_admin import partitions_of


class RescoreRefused(Exception):
    """Publishing would be wrong (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class PartitionReplay:
    """One partition replayed under the new model: each lead's new score, and counts."""

    partition: int
    scores: dict[str, LeadScore]
    records: int
    refused: int
    merged: frozenset[str] = frozenset()
    """Anonymous ids merged into known leads: no leads of their own, now or under the new
    model (their last score stays in the compacted scores topic)."""


# --- the dry run ------------------------------------------------------------------------


async def dry_run(
    settings: ScoringSettings, model: ScoringModel, processes: int | None = None
) -> dict[str, Any]:
    """The report of ``model`` against what is live now (see the module)."""
    started = time.monotonic()
    spans = await partition_spans(settings)
    replays = asyncio.create_task(replay_all(settings, model, spans, processes))
    now = await read_live_scores(settings)
    replayed = await replays
    new = {lead: score for part in replayed for lead, score in part.scores.items()}
    for part in replayed:
        for merged in part.merged:
            now.pop(merged, None)
    partitions = [span.partition for span in spans]
    report = build_report(
        now,
        new,
        new_version=model.version,
        spans=spans,
        partition_of=lambda lead_id: PARTITIONER(encode_key(lead_id), partitions, None),
    )
    report["replay"] = {
        "records": sum(part.records for part in replayed),
        "refused": sum(part.refused for part in replayed),
        "seconds": round(time.monotonic() - started, 3),
    }
    return report


async def read_live_scores(
    settings: ScoringSettings, timeout: float = 600.0
) -> dict[str, LeadScore]:
    """Each lead's latest committed score update; an erased lead (tombstone) has none."""
    topic = settings.topics.scores
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = make_consumer(settings, name="rescore-now", group_id=None)
    latest: dict[str, bytes] = {}
    try:
        await consumer.start()  # inside: a start that fails still stops its client
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batches.values():
                for record in records:
                    if record.key is None:
                        continue
                    lead_id = record.key.decode()
                    if record.value is None:
                        latest.pop(lead_id, None)
                    else:
                        latest[lead_id] = record.value
    finally:
        await consumer.stop()
    return {lead: LeadScore.of_update(orjson.loads(value)) for lead, value in latest.items()}


async def replay_all(
    settings: ScoringSettings,
    model: ScoringModel,
    spans: Sequence[PartitionSpan],
    processes: int | None = None,
) -> list[PartitionReplay]:
    """Every partition up to its end offset now, in ``processes`` processes (default: one
    per partition, up to twice the cores; 1 replays here, in this process).

    More processes than cores on purpose: three partitions on two cores in two processes
    leave one core idle for the last third, while three processes share both to the end.
    """
    workers = processes or min(len(spans), 2 * (os.cpu_count() or 1))
    jobs = [(span.partition, span.end) for span in spans]
    if workers <= 1:
        return [await replay_partition(settings, model, p, end) for p, end in jobs]
    loop = asyncio.get_running_loop()
    document = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    context = multiprocessing.get_context("spawn")  # no event loop or producer inherited
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            loop.run_in_executor(pool, _replay_in_process, settings, document, p, end)
            for p, end in jobs
        ]
        return list(await asyncio.gather(*futures))


async def replay_partition(
    settings: ScoringSettings, model: ScoringModel, partition: int, end: int
) -> PartitionReplay:
    replay = Replay(model, timedelta(days=settings.dedup_horizon_days))
    if end > 0:
        async for records in read_until(settings, partition, end):
            replay.add_all(records)
    replayed = replay.finish()
    scores = {lead: LeadScore.of_score(score) for lead, score in replayed.scores.items()}
    return PartitionReplay(
        partition, scores, replayed.records, replayed.refused, frozenset(replayed.aliases)
    )


def _replay_in_process(
    settings: ScoringSettings, document: Mapping[str, Any], partition: int, end: int
) -> PartitionReplay:
    model = ScoringModel.model_validate(document)
    return asyncio.run(replay_partition(settings, model, partition, end))


# --- publishing ---------------------------------------------------------------------------


async def publish(
    settings: ScoringSettings,
    model: ScoringModel,
    file_model: ScoringModel,
    report: Mapping[str, Any],
    *,
    partial_history: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[int, int]:
    """Make ``model`` live; the switch records' offsets by partition.

    ``file_model`` is the model the workers run from their file, live until the first
    publication: it is recorded first, so the history starts with it.
    """
    publications = await read_publications(settings)
    live = publications[-1].version if publications else file_model.version
    if model.version == live:
        raise RescoreRefused(
            f"model {model.version} is already live: give the new one a new version"
        )
    for earlier in publications:
        if earlier.version == model.version and not earlier.same_model(model):
            raise RescoreRefused(
                f"version {model.version} was published before with other rules:"
                " give this model a new version"
            )
    if not report["history"]["complete"] and not partial_history:
        raise RescoreRefused(
            "leadflow.events no longer holds the whole history (see the report's history):"
            " rescoring would lose engagement; pass --accept-partial-history to publish anyway"
        )
    if not publications:
        await write_publication(settings, Publication.of(file_model, None))
    at = clock()
    await write_publication(settings, Publication.of(model, at, previous=live))
    return await write_switches(settings, Switch(model.version, at))


async def wait_for_switch(
    settings: ScoringSettings,
    offsets: Mapping[int, int],
    progress: Callable[[int, int], None] = lambda done, total: None,
    timeout: float = 1800.0,
) -> None:
    """Until the scoring group has committed past every switch record (every partition then
    scores under the new model); ``progress(switched, partitions)`` on each change."""
    topic = settings.topics.events
    admin = make_admin(settings, name="rescore-wait")
    await admin.start()
    deadline = time.monotonic() + timeout
    reported = -1
    try:
        while True:
            committed = await admin.list_consumer_group_offsets(settings.scoring_group)
            switched = sum(
                1
                for partition, offset in offsets.items()
                if (done := committed.get(TopicPartition(topic, partition))) is not None
                and done.offset > offset
            )
            if switched != reported:
                progress(switched, len(offsets))
                reported = switched
            if switched == len(offsets):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(offsets) - switched} partitions not switched after {timeout:.0f}s:"
                    " is scoring running?"
                )
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
