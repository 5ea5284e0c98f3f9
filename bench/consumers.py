"""Timing a consumer group through a pre-filled topic: the scoring and scaling cases.

The clock starts when the group has settled (every partition taken, its state restored:
the "took" lines of every worker) and stops when the group's committed offsets reach the
end of the input. Scoring commits its offsets inside each batch's transaction, so that
moment is "every score committed". Whatever was committed before the clock started is
left out of the count, which keeps restore and group joins out of the rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.common import produce_all, started_producer
from bench.env import BenchEnv, CpuMeter, GroupOffsets, OwnershipTail, wait_settled
from shared.processes import ServiceProcess

Kind = Literal["scoring", "passthrough"]


@dataclass
class GroupRun:
    rate: float
    """Input records per second, from the settled group to the last commit."""
    counted: int
    seconds: float
    cpu: dict[str, float]

    def details(self) -> dict[str, Any]:
        """What the JSON keeps of a run."""
        return {"counted": self.counted, "seconds": round(self.seconds, 2), "cpu": self.cpu}


async def time_group(
    env: BenchEnv,
    kind: Kind,
    records: Sequence[tuple[bytes, bytes]],
    *,
    workers: int = 1,
    partitions: int = 3,
    batch_records: int = 500,
    timeout: float = 900.0,
) -> GroupRun:
    settings = await env.namespace(kind, partitions)
    topic = settings.topics.events
    producer = await started_producer(settings, "bench-prefill")
    try:
        await produce_all(producer, topic, records, batch=5000, in_flight=4)
    finally:
        await producer.stop()
    group = env.unique(f"bench-{kind}")
    process_env = env.service_env(
        settings,
        LEADFLOW_SCORING_GROUP=group,
        LEADFLOW_SCORING_BATCH_RECORDS=str(batch_records),
    )
    processes: list[ServiceProcess] = []
    try:
        for _ in range(workers):
            if kind == "scoring":
                processes.append(env.start_service("scoring", process_env))
            else:
                # the raw limit: uncompressed, its fastest (its 300-byte records gain little)
                raw_env = {**process_env, "LEADFLOW_KAFKA_COMPRESSION": "none"}
                processes.append(env.start_module("bench.passthrough", raw_env))
        tails = [OwnershipTail(p.log_file) for p in processes if p.log_file is not None]
        async with GroupOffsets(env.bootstrap_servers) as offsets:
            started = await wait_settled(tails, partitions, processes)
            pids: dict[str, int | None] = {
                f"{kind}-{i + 1}": p.process.pid if p.process else None
                for i, p in enumerate(processes)
            }
            pids["broker"] = env.kafka.process.pid if env.kafka.process else None
            meter = CpuMeter(pids)
            before = sum((await offsets.committed(group, topic)).values())
            deadline = time.monotonic() + timeout
            while True:
                committed = sum((await offsets.committed(group, topic)).values())
                if committed >= len(records):
                    finished = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind}: {committed}/{len(records)} after {timeout}s")
                for process in processes:
                    if not process.running:
                        raise RuntimeError(f"{process.name} exited; see {process.log_file}")
                await asyncio.sleep(0.05)
            cpu = meter.utilisation()
    finally:
        await env.stop(*processes)
        await env.drop_namespace(settings)
    counted = len(records) - before
    seconds = finished - started
    return GroupRun(counted / seconds, counted, seconds, cpu)
