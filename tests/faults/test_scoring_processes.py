"""``LEADFLOW_SCORING_PROCESSES``: several worker processes in one scoring service.

The children are ordinary members of the scoring group, so the results must equal the
pure model with each stage change once, the service's ``/metrics`` must count what every
process scored, and a SIGKILLed service must not leave its children running.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from devtools.broker import LocalKafka, free_port
from devtools.processes import ServiceProcess
from devtools.synthetic import synthetic_stream
from tests.faults.deployment import (
    Deployment,
    Platform,
    assert_stage_changes_exactly_once,
    wait_until_served,
)
from tests.postgres import EmbeddedPostgres
from tests.reference import reference
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SCORED = re.compile(r'^leadflow_scoring_events_total\{outcome="scored"\} (\S+)$', re.M)
LAG_PID = re.compile(r'^leadflow_scoring_consumer_lag\{[^}]*pid="(\d+)"', re.M)


async def metrics_of(url: str) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{url}/metrics")
        answer.raise_for_status()
        return answer.text


def scored(text: str) -> float:
    found = SCORED.search(text)
    return float(found.group(1)) if found else 0.0


def worker_pids(text: str) -> set[int]:
    """The processes that have consumed: each reports its partitions' lag with its pid."""
    return {int(pid) for pid in LAG_PID.findall(text)}


def running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; only its reaping is left


async def test_two_worker_processes_score_each_event_once_and_end_with_the_service(
    kafka: LocalKafka, tmp_path: Path, private_postgres: EmbeddedPostgres
) -> None:
    deployment = Deployment(kafka, private_postgres.url, tmp_path, partitions=4)
    await deployment.create_topics()
    events = list(synthetic_stream(leads=300, events_per_lead=10, seed=61, run_id="procs"))
    ingest = deployment.start("ingest")
    scoring = ServiceProcess(
        "scoring",
        {**deployment.env, "LEADFLOW_SCORING_PROCESSES": "2"},
        port=free_port(),
        log_file=tmp_path / "scoring.log",
    ).start()
    deployment.processes.append(scoring)
    scoring.wait_ready()
    pipeline = deployment.start("pipeline")
    platform = Platform(ingest.url)
    try:
        await platform.post_all(events, batch_size=250)
        expected = reference(platform.accepted)
        await wait_until_served(pipeline.url, expected)
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)

        text = await eventually(
            lambda: metrics_of(scoring.url),
            lambda t: scored(t) >= len(platform.accepted),
            timeout=60,
        )
        assert scored(text) == len(platform.accepted)  # all processes, none twice
        pids = worker_pids(text)
        assert scoring.process is not None
        assert scoring.process.pid in pids
        assert len(pids) == 2, pids  # the child owned partitions too

        scoring.kill()  # SIGKILL of the service: nothing runs its shutdown
        children = pids - {scoring.process.pid}
        await eventually(lambda: _still_running(children), lambda alive: not alive, timeout=60)
    finally:
        await platform.close()
        deployment.stop_all()


async def _still_running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if running(pid)}
