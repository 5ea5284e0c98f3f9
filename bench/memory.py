"""memory: what one scoring worker's lead states take in memory, and how fast they restore.

The changelog is the one a worker writes for the bench stream (:mod:`bench.worker_records`:
the worker's own batch code and record layout over 60,000 events of ~5,000 leads, one
partition), compacted to the last record of each lead. Each measurement is a process of
its own (``python -m bench.lead_memory``) that folds renamed copies of it into one
partition state through the worker's restore code (:func:`~services.scoring.changelog.
apply_record`, in process: no broker, so the time is the decoding and building of the
states alone, the collector running as it does in the worker's restore) until it holds
100,000 or 1,000,000 leads, and reports its resident memory per lead (RSS delta / leads)
and leads restored per second. One more process, not timed, counts the same 100,000 leads
with tracemalloc and walks 20,000 of them object by object (:mod:`bench.footprint`):
where the bytes go, per field and type. Last, the same 100,000 leads are written to a
changelog partition on the bench broker and restored by the worker's
:func:`~services.scoring.changelog.restore` itself, in the bench process: the time with
the broker's fetch and aiokafka's decoding of the records.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from typing import Any

import orjson

from bench.common import started_producer
from bench.env import BenchEnv, Config
from bench.lead_memory import Sample, renamed
from bench.payload import bench_events, record_values
from bench.stats import Row, Summary, Target, write
from bench.worker_records import written_batches
from services.scoring import changelog
from services.scoring.state_records import APPLIED_OFFSET_KEY
from shared.kafka import send_as_batches

SAMPLE_EVENTS = 60_000
RUN = "sample"
"""The sample's run id (part of every lead and event id): six characters, not all hex, so
no copy's token (hex digits) is it."""
BYTES_PER_LEAD_MAX = 2048
LEADS_PER_S_MIN = 100_000


def compacted(changelog: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    """The last record of each lead: what compaction leaves of a changelog partition."""
    last: dict[bytes, bytes | None] = {}
    for key, value in changelog:
        if key != APPLIED_OFFSET_KEY:
            last.pop(key, None)
            last[key] = value
    return [(key, value) for key, value in last.items() if value is not None]


async def measured(path: str, leads: int, *flags: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.lead_memory", "--sample", path, "--leads", str(leads),
        *flags, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.lead_memory --leads {leads} {flags} exited {process.returncode}")
    result: dict[str, Any] = orjson.loads(out)
    return result


async def broker_restore(env: BenchEnv, sample: Sample, leads: int) -> float:
    """Leads/s of :func:`changelog.restore` reading ``leads`` leads from the broker."""
    settings = await env.namespace("memory", 1)
    topic = settings.topics.scoring_state
    producer = await started_producer(settings, "bench-changelog")
    try:
        sent, copy = 0, 0
        while sent < leads:
            chunk = renamed(sample, copy, leads - sent)
            await asyncio.gather(*await send_as_batches(producer, topic, 0, chunk))
            sent, copy = sent + len(chunk), copy + 1
    finally:
        await producer.stop()
    try:
        started = time.perf_counter()
        state = await changelog.restore(settings, 0, timeout=900)
        seconds = time.perf_counter() - started
    finally:
        await env.drop_namespace(settings)
    if len(state.leads) != leads:
        raise RuntimeError(f"restored {len(state.leads)} of {leads} leads")
    return leads / seconds


async def run(env: BenchEnv, config: Config) -> list[Row]:
    write(f"  memory: the changelog of {SAMPLE_EVENTS:,} events (in process)")
    records = record_values(bench_events(SAMPLE_EVENTS, run_id=RUN))
    batches = await asyncio.to_thread(
        lambda: list(written_batches(records, partitions=1, batch_records=500))
    )
    sample = compacted([record for batch in batches for record in batch.changelog])
    path = env.root / f"{env.unique('changelog')}.pickle"
    with path.open("wb") as file:
        pickle.dump((RUN.encode(), sample), file)
    sizes = (config.size(quick=20_000, full=100_000), config.size(quick=100_000, full=1_000_000))
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for index in range(config.warmups + config.runs):
        for size in sizes:
            result = await measured(str(path), size)
            kept = index >= config.warmups
            if kept:
                runs[size].append(result)
            write(
                f"  memory: {'run' if kept else 'warm-up'} {size:,} leads: "
                f"{result['rss_bytes_per_lead']:,.0f} bytes/lead, "
                f"{result['leads_per_s']:,.0f} leads/s"
            )
    detail = await measured(str(path), sizes[0], "--trace", "--footprint", "20000")
    without_gc = await measured(str(path), sizes[-1], "--no-gc")
    through_broker = [
        await broker_restore(env, (RUN.encode(), sample), sizes[0]) for _ in range(config.runs)
    ]
    write(
        f"  memory: traced {detail['traced_bytes_per_lead']:,.0f} bytes/lead, walked "
        f"{detail['footprint']['bytes_per_lead']:,.0f}; without the collector "
        f"{without_gc['leads_per_s']:,.0f} leads/s at {sizes[-1]:,}"
    )
    extra = {
        "sample_leads": len(sample),
        "sample_record_bytes": round(sum(len(v) for _, v in sample) / len(sample), 1),
        "runs": {str(size): results for size, results in runs.items()},
        "traced_and_walked": detail,
        "without_gc": without_gc,
    }
    rows: list[Row] = []
    for size in sizes:
        results = runs[size]
        rows += [
            Row(
                "memory",
                f"resident memory per lead, {size:,} leads in one worker",
                "bytes",
                Summary([r["rss_bytes_per_lead"] for r in results]),
                higher_is_better=False,
                target=Target("value_max", BYTES_PER_LEAD_MAX),
                extra=extra if not rows else {},
            ),
            Row(
                "memory",
                f"restore, {size:,} leads (apply_record, in process)",
                "leads/s",
                Summary([r["leads_per_s"] for r in results]),
                target=Target("value_min", LEADS_PER_S_MIN),
            ),
        ]
    rows.append(
        Row(
            "memory",
            f"restore, {sizes[0]:,} leads (changelog.restore from the broker)",
            "leads/s",
            Summary(through_broker),
            target=Target("value_min", LEADS_PER_S_MIN),
        )
    )
    return rows
