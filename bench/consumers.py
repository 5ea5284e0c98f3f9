"""Timing a consumer group through a pre-filled topic: the scoring and scaling cases.

The workers start on an empty topic, and the group settles there (every partition taken,
its state restored: the "took" lines of every worker). Then the topic is filled in ONE
Kafka transaction: the workers read committed records only, so none of them scores
anything until the commit makes every record visible at once, a pre-filled topic. The
clock runs from that commit until the group's committed offsets reach the end. Scoring
commits its offsets inside each batch's transaction, so that moment is "every score
committed". (Filled first, with the workers started after, the first worker to join scored
on its own until the others had joined: a third of the records in the 2- and 3-worker
runs, all of them in quick runs, which then reported 0 events/s. Filled without a
transaction after the group settled, the passthrough consumed two thirds of the records
while they were being written.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from bench.common import produce_all, started_producer
from bench.env import BenchEnv, CpuMeter, GroupOffsets, OwnershipTail, wait_settled
from devtools.processes import ServiceProcess
from shared.settings import LeadflowSettings

Kind = Literal["scoring", "passthrough", "same-records"]
"""The worker, the one-record passthrough, the passthrough writing what the worker writes."""


@dataclass
class GroupRun:
    rate: float
    """Input records per second, from the full topic to the last commit."""
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
    written: Path | None = None,
    processes_each: int = 1,
) -> GroupRun:
    """``written``: what the worker writes per input (for the same-records passthrough);
    ``processes_each``: scoring's ``LEADFLOW_SCORING_PROCESSES`` in each worker service."""
    settings = await env.namespace(kind, partitions)
    topic = settings.topics.events
    group = env.unique(f"bench-{kind}")
    processes = _start_workers(
        env, kind, settings, group, workers, batch_records, written, processes_each
    )
    try:
        tails = [OwnershipTail(p.log_file, topic) for p in processes if p.log_file is not None]
        async with GroupOffsets(env.bootstrap_servers) as offsets:
            await wait_settled(tails, partitions, processes, members=workers * processes_each)
            await _fill_at_once(settings, topic, records, transactional_id=f"{group}-fill")
            meter = CpuMeter(_pids(env, kind, processes))
            started = time.monotonic()
            before = sum((await offsets.committed(group, topic)).values())
            deadline = started + timeout
            while True:
                committed = sum((await offsets.committed(group, topic)).values())
                if committed >= len(records):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind}: {committed}/{len(records)} after {timeout}s")
                for process in processes:
                    if not process.running:
                        raise RuntimeError(f"{process.name} exited; see {process.log_file}")
                await asyncio.sleep(0.05)
            finished = time.monotonic()
            cpu = meter.utilisation()
    finally:
        await env.stop(*processes)
        await env.drop_namespace(settings)
    counted = len(records) - before
    if counted < len(records) // 2:
        raise RuntimeError(
            f"{kind}: {before} of {len(records)} records were committed before the clock"
            " started, so what is left is too little to time"
        )
    seconds = finished - started
    return GroupRun(counted / seconds, counted, seconds, cpu)


async def _fill_at_once(
    settings: LeadflowSettings,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    *,
    transactional_id: str,
) -> None:
    """Every record in one transaction: the workers read committed records only, so they
    see none of them until the commit, then all of them, as a topic filled beforehand."""
    producer = await started_producer(settings, "bench-fill", transactional_id=transactional_id)
    try:
        async with producer.transaction():
            await produce_all(producer, topic, records, batch=5000, in_flight=4)
    finally:
        await producer.stop()


def _start_workers(
    env: BenchEnv,
    kind: Kind,
    settings: LeadflowSettings,
    group: str,
    workers: int,
    batch_records: int,
    written: Path | None,
    processes_each: int = 1,
) -> list[ServiceProcess]:
    process_env = env.service_env(
        settings,
        LEADFLOW_SCORING_GROUP=group,
        LEADFLOW_SCORING_BATCH_RECORDS=str(batch_records),
        LEADFLOW_SCORING_PROCESSES=str(processes_each),
    )
    if kind == "scoring":
        return [env.start_service("scoring", process_env) for _ in range(workers)]
    # the raw limit: uncompressed, its fastest (its 300-byte records gain little)
    raw_env = {**process_env, "LEADFLOW_KAFKA_COMPRESSION": "none"}
    if kind == "same-records":
        if written is None:
            raise ValueError("the same-records passthrough needs what the worker writes")
        raw_env["BENCH_WRITTEN"] = str(written)
    return [env.start_module("bench.passthrough", raw_env) for _ in range(workers)]


def _pids(env: BenchEnv, kind: Kind, processes: Sequence[ServiceProcess]) -> dict[str, int | None]:
    pids: dict[str, int | None] = {}
    for i, service in enumerate(processes):
        if service.process is None:
            continue
        pids[f"{kind}-{i + 1}"] = service.process.pid
        with contextlib.suppress(psutil.Error):  # LEADFLOW_SCORING_PROCESSES' children
            children = psutil.Process(service.process.pid).children(recursive=True)
            for n, child in enumerate(children, start=1):
                pids[f"{kind}-{i + 1}.{n}"] = child.pid
    pids["broker"] = env.kafka.process.pid if env.kafka.process else None
    return pids
