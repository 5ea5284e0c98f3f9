"""scaling: total events/s scored by 1, 2 and 3 worker processes on a 6-partition topic.

Each process a service of its own, and, beside them, one service running two worker
processes (``LEADFLOW_SCORING_PROCESSES=2``): the same group members, started by one
service instead of two.

Each count is timed like the scoring case (from the full topic to the last commit);
the ratio of 2 and 3 workers is their speed-up over one. On 2 cores the broker and the
workers share the CPU, so the ceiling is the machine, not the design: see the CPU use
recorded per run in the JSON.
"""

from __future__ import annotations

from typing import Any

from bench.common import repeat, run_id
from bench.consumers import time_group
from bench.env import BenchEnv, Config
from bench.payload import bench_events, record_values
from bench.stats import Row, Summary

PARTITIONS = 6
WORKERS = (1, 2, 3)
ONE_SERVICE = "1 service, 2 processes"


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=20_000, full=100_000)
    records = record_values(bench_events(count, run_id=run_id()))
    details: dict[str, list[dict[str, Any]]] = {}

    def side(name: str, workers: int, processes_each: int = 1) -> Any:
        async def measure() -> float:
            result = await time_group(
                env,
                "scoring",
                records,
                workers=workers,
                partitions=PARTITIONS,
                processes_each=processes_each,
            )
            details.setdefault(name, []).append(result.details())
            return result.rate

        return measure

    sides = {f"{n} worker(s)": side(f"{n} worker(s)", n) for n in WORKERS}
    sides[ONE_SERVICE] = side(ONE_SERVICE, 1, processes_each=2)
    results = await repeat(
        "scaling",
        sides,
        config.runs,
        0,  # the scoring case warms the same path; a warm-up here would double the case
    )
    one = Summary(results["1 worker(s)"])
    rows = []
    for n in WORKERS:
        rows.append(
            Row(
                "scaling",
                f"events scored, {n} worker process{'es' if n > 1 else ''}, 6 partitions",
                "events/s",
                Summary(results[f"{n} worker(s)"]),
                baseline_name=None if n == 1 else "1 worker",
                baseline=None if n == 1 else one,
                notes="" if n == 1 else "ratio = speed-up over one worker",
                extra={"events_per_run": count, "runs": details[f"{n} worker(s)"]},
            )
        )
    rows.append(
        Row(
            "scaling",
            "events scored, 1 service with LEADFLOW_SCORING_PROCESSES=2, 6 partitions",
            "events/s",
            Summary(results[ONE_SERVICE]),
            baseline_name="1 worker",
            baseline=one,
            notes="ratio = speed-up over one worker",
            extra={"events_per_run": count, "runs": details[ONE_SERVICE]},
        )
    )
    return rows
