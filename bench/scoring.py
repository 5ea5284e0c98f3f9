"""scoring: events/s scored with transactions by one worker, from a pre-filled topic.

The worker is the real service (``python -m services.scoring``), holding its partitions
before the topic is filled, timed from the full topic to the last committed offset (see
:mod:`bench.consumers`). Two baselines, in the same runs, interleaved with it:

- the passthrough (``bench/passthrough.py``): the same consumer, the same per-partition
  transactional producers and batch size, one transaction per partition batch, one
  record out per record in, no scoring: the distance to the limit of the libraries;
- the same-records passthrough: the same, writing in each transaction what the worker
  writes for those inputs (:mod:`bench.worker_records`: a score update per scored event,
  the stage changes, a changelog record per lead of the batch and the offset marker, of
  the worker's sizes and headers, in its order), computed in process beforehand by the
  worker's own batch code over the same stream: the ratio to it is leadflow's own cost.
"""

from __future__ import annotations

import pickle
import statistics
from typing import Any

from bench.common import repeat, run_id
from bench.consumers import GroupRun, Kind, time_group
from bench.env import BenchEnv, Config
from bench.payload import bench_events, mean_record_bytes, record_values
from bench.stats import Row, Summary, Target, write
from bench.worker_records import WrittenBatch, written_batches, written_by_input

PARTITIONS = 3
BATCH_RECORDS = 500
"""The worker's default ``scoring_batch_records``: one transaction per partition batch."""


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=20_000, full=100_000)
    records = record_values(bench_events(count, run_id=run_id()))
    warmup = records[: max(1, count // 4)]
    write(f"  scoring: what the worker writes for {count:,} events (in process)")
    batches = list(written_batches(records, partitions=PARTITIONS, batch_records=BATCH_RECORDS))
    written = env.root / f"{env.unique('written')}.pickle"
    with written.open("wb") as file:
        pickle.dump(written_by_input(iter(batches)), file)
    kinds: tuple[Kind, ...] = ("scoring", "passthrough", "same-records")
    details: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}

    def side(kind: Kind) -> Any:
        async def measure() -> float:
            # warm-ups run a quarter of the records: enough to load the code and the broker
            first = len(details[kind]) < config.warmups
            result: GroupRun = await time_group(
                env, kind, warmup if first else records, partitions=PARTITIONS,
                batch_records=BATCH_RECORDS, written=written,
            )  # fmt: skip
            details[kind].append(result.details())
            return result.rate

        return measure

    results = await repeat(
        "scoring", {kind: side(kind) for kind in kinds}, config.runs, config.warmups
    )
    extra = {
        "events_per_run": count,
        "batch_records": BATCH_RECORDS,
        "mean_record_bytes": round(mean_record_bytes(records), 1),
        "worker_writes": writes_per_input(batches, count),
        "runs": details,
    }
    metric = "events scored, 1 worker, 3 partitions"
    scoring = Summary(results["scoring"])
    return [
        Row(
            "scoring", metric, "events/s", scoring,
            baseline_name="txn passthrough",
            baseline=Summary(results["passthrough"]),
            target=Target("ratio_min", 0.35),
            extra=extra,
        ),
        Row(
            "scoring", metric, "events/s", scoring,
            baseline_name="same-records passthrough",
            baseline=Summary(results["same-records"]),
            target=Target("ratio_min", 0.6),
        ),
    ]  # fmt: skip


def writes_per_input(batches: list[WrittenBatch], inputs: int) -> dict[str, dict[str, float]]:
    """Records per input event and their mean size, per kind: what the worker writes."""
    kinds = sorted({kind for batch in batches for kind in batch.outputs})
    summary: dict[str, dict[str, float]] = {}
    for kind in kinds:
        sizes = [size for batch in batches for size in batch.outputs.get(kind, [])]
        summary[kind] = {
            "per_input": round(len(sizes) / inputs, 4) if inputs else 0.0,
            "mean_bytes": round(statistics.fmean(sizes), 1) if sizes else 0.0,
        }
    summary["transactions"] = {"per_input": round(len(batches) / inputs, 5) if inputs else 0.0}
    return summary
