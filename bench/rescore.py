"""rescore: a new model's dry run and its publication over a scored history.

Setup (not timed): the events are written to ``leadflow.events`` and the real scoring
service scores them all. Then, alternately, one run of each:

- **dry run**: :func:`services.scoring.rescore.dry_run` in this process, its replays in
  one spawned process per core (what ``leadflow rescore`` does), timed whole: reading the
  live scores, replaying every partition, building the report;
- **publish**: from writing the publication to the scoring group's committed offsets past
  every switch record: the running workers (two scoring services, the partitions shared
  between them) replay their partitions and commit the switch (each run publishes a new
  version, so each one rescores everything again);
- **raw read**: the two topics the dry run reads, read to their ends with one consumer
  each and nothing done with the records: the floor under any replay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from bench.common import produce_all, run_id, started_producer
from bench.env import BenchEnv, Config, GroupOffsets
from bench.payload import bench_events, record_values
from bench.stats import Row, Summary, Target, write
from services.scoring.model import ScoringModel, load_model
from services.scoring.rescore import dry_run, publish, wait_for_switch
from services.scoring.settings import ScoringSettings
from shared.kafka import make_consumer
from shared.topic_admin import partitions_of

PARTITIONS = 3
WORKERS = 2
"""Scoring services: one per core of the machine, the partitions shared between them."""
GROUP = "bench-rescore"


def version(model: ScoringModel, number: int) -> ScoringModel:
    """The model again under another version, with pricing views worth a point more."""
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["version"] = f"bench-{number}"
    for rule in data["engagement"]["rules"]:
        if rule["id"] == "pricing-view":
            rule["points"] = rule["points"] + number
    return ScoringModel.model_validate(data)


async def read_raw(settings: ScoringSettings, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = make_consumer(settings, name="bench-raw", group_id=None)
    await consumer.start()
    count = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            count += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return count


async def scored(env: BenchEnv, settings: ScoringSettings, count: int) -> None:
    async with GroupOffsets(env.bootstrap_servers) as offsets:
        deadline = time.monotonic() + 1800
        while sum((await offsets.committed(GROUP, settings.topics.events)).values()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("scoring did not finish the history")
            await asyncio.sleep(0.5)


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=100_000, full=1_000_000)
    events = bench_events(count, run_id=run_id())
    leads = len({e["lead_id"] for e in events})
    base = await env.namespace("rescore", PARTITIONS)
    settings = ScoringSettings(**base.model_dump(), scoring_group=GROUP, scoring_accounts=False)
    producer = await started_producer(settings, "bench-rescore-fill")
    try:
        await produce_all(producer, settings.topics.events, record_values(events), batch=5000)
    finally:
        await producer.stop()
    del events
    service_env = env.service_env(settings, LEADFLOW_SCORING_GROUP=GROUP)
    processes = [env.start_service("scoring", service_env) for _ in range(WORKERS)]
    model = load_model()
    times: dict[str, list[float]] = {"dry run": [], "publish": [], "raw read": []}
    details: list[dict[str, Any]] = []
    try:
        await env.wait_ready(*processes)
        started = time.monotonic()
        await scored(env, settings, count)
        write(f"  rescore: history of {count:,} events scored in {time.monotonic() - started:.0f}s")
        for number in range(1, config.warmups + config.runs + 1):
            new = version(model, number)
            started = time.monotonic()
            report = await dry_run(settings, new)
            dry = time.monotonic() - started
            started = time.monotonic()
            offsets = await publish(settings, new, model, report)
            await wait_for_switch(settings, offsets, timeout=900)
            published = time.monotonic() - started
            started = time.monotonic()
            raw_records = await read_raw(settings, settings.topics.events)
            raw_records += await read_raw(settings, settings.topics.scores)
            raw = time.monotonic() - started
            write(f"  rescore: run {number}: dry run {dry:.1f}s, publish {published:.1f}s,"
                  f" raw read {raw:.1f}s ({raw_records:,} records)")  # fmt: skip
            if number > config.warmups:
                times["dry run"].append(dry)
                times["publish"].append(published)
                times["raw read"].append(raw)
                details.append({"moves": report["moves"], "replay": report["replay"]})
    finally:
        await env.stop(*processes)
        await env.drop_namespace(settings)
    extra = {
        "events": count, "leads": leads, "partitions": PARTITIONS, "workers": WORKERS,
        "runs": details,
    }  # fmt: skip
    return [
        Row(
            "rescore",
            f"dry run, {count:,} events, {leads:,} leads",
            "s",
            Summary(times["dry run"]),
            higher_is_better=False,
            baseline_name="read events + scores",
            baseline=Summary(times["raw read"]),
            target=Target("value_max", 60),
            extra=extra,
        ),
        Row(
            "rescore",
            f"publish ({WORKERS} workers rescore all), {count:,} events",
            "s",
            Summary(times["publish"]),
            higher_is_better=False,
            baseline_name="read events + scores",
            baseline=Summary(times["raw read"]),
            target=Target("value_max", 60),
        ),
    ]
