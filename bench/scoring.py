"""scoring: events/s scored with transactions by one worker, from a pre-filled topic.

The worker is the real service (``python -m services.scoring``), holding its partitions
before the topic is filled, timed from the full topic to the last committed offset (see
:mod:`bench.consumers`). Baseline: the passthrough
(``bench/passthrough.py``): the same consumer, the same per-partition transactional
producers and batch size, one transaction per partition batch, no scoring.
"""

from __future__ import annotations

from typing import Any

from bench.common import repeat, run_id
from bench.consumers import GroupRun, Kind, time_group
from bench.env import BenchEnv, Config
from bench.payload import bench_events, mean_record_bytes, record_values
from bench.stats import Row, Summary, Target

PARTITIONS = 3
BATCH_RECORDS = 500
"""The worker's default ``scoring_batch_records``: one transaction per partition batch."""


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=20_000, full=100_000)
    records = record_values(bench_events(count, run_id=run_id()))
    warmup = records[: max(1, count // 4)]
    details: dict[str, list[dict[str, Any]]] = {"scoring": [], "passthrough": []}

    def side(kind: Kind) -> Any:
        async def measure() -> float:
            # warm-ups run a quarter of the records: enough to load the code and the broker
            first = len(details[kind]) < config.warmups
            result: GroupRun = await time_group(
                env, kind, warmup if first else records, partitions=PARTITIONS,
                batch_records=BATCH_RECORDS,
            )  # fmt: skip
            details[kind].append(result.details())
            return result.rate

        return measure

    results = await repeat(
        "scoring",
        {"scoring": side("scoring"), "passthrough": side("passthrough")},
        config.runs,
        config.warmups,
    )
    return [
        Row(
            "scoring",
            "events scored, 1 worker, 3 partitions",
            "events/s",
            Summary(results["scoring"]),
            baseline_name="txn passthrough",
            baseline=Summary(results["passthrough"]),
            target=Target("ratio_min", 0.5),
            extra={
                "events_per_run": count,
                "batch_records": BATCH_RECORDS,
                "mean_record_bytes": round(mean_record_bytes(records), 1),
                "runs": details,
            },
        )
    ]
