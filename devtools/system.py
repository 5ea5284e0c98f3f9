"""The whole system on one machine: broker, topics, migrations, the four services.

Each service is its own process, as in production; their output is prefixed
with the service name so one terminal stays readable. Ctrl-C (or SIGTERM)
stops the services first, then the broker, and leaves no process behind.
One run per data directory (:mod:`devtools.instance_lock`): a second one is
refused before it touches the broker's files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devtools.broker import LocalKafka
from devtools.instance_lock import holding
from devtools.processes import ServiceProcess
from services.pipeline.settings import PipelineSettings
from services.scoring.settings import ScoringSettings
from services.webhooks.settings import WebhooksSettings
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

COLOURS = {
    "kafka": "90",
    "ingest": "36",
    "scoring": "35",
    "pipeline": "33",
    "webhooks": "32",
    "leadflow": "1",
}

RUN_VARIABLES = (
    "LEADFLOW_KAFKA_PORT",
    "LEADFLOW_INGEST_PORT",
    "LEADFLOW_SCORING_PORT",
    "LEADFLOW_PIPELINE_PORT",
    "LEADFLOW_WEBHOOKS_PORT",
)
"""Read by ``leadflow run`` only; a service is given its own ``LEADFLOW_PORT`` instead."""


@dataclass(frozen=True)
class Ports:
    """Where ``leadflow run`` puts each process: one port each, on loopback."""

    kafka: int
    ingest: int
    scoring: int
    pipeline: int
    webhooks: int = 8004

    def of(self, service: str) -> int:
        return {
            "ingest": self.ingest,
            "scoring": self.scoring,
            "pipeline": self.pipeline,
            "webhooks": self.webhooks,
        }[service]


def say(source: str, line: str) -> None:
    colour = COLOURS.get(source, "0")
    prefix = f"\x1b[{colour}m{source:<8}|\x1b[0m " if sys.stdout.isatty() else f"{source:<8}| "
    sys.stdout.write(prefix + line.rstrip("\n") + "\n")
    sys.stdout.flush()


def child_environment(
    parent: Mapping[str, str], service: str, ports: Ports, data_dir: Path
) -> dict[str, str]:
    """The whole environment of one service: the parent's, with its own port and broker.

    A ``LEADFLOW_PORT`` of the parent would give all the services the same port; each
    gets the one :class:`Ports` names instead, and the variables meant for ``run`` stay
    with it. ``LEADFLOW_DATABASE_URL`` is passed on when set (PostgreSQL), else the
    services share a SQLite file in the data directory. The webhooks service keeps its
    own database (``LEADFLOW_WEBHOOKS_DATABASE_URL``), by default a file beside it.
    """
    env = {k: v for k, v in parent.items() if k not in RUN_VARIABLES}
    env["LEADFLOW_PORT"] = str(ports.of(service))
    env["LEADFLOW_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{ports.kafka}"
    env.setdefault("LEADFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'leadflow.db'}")
    env.setdefault(
        "LEADFLOW_WEBHOOKS_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'webhooks.db'}"
    )
    return env


def stop_services(services: Sequence[ServiceProcess]) -> None:
    """Services first and all at once (SIGTERM), so each drains while the others do."""
    for service in services:
        if service.running:
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
    for service in services:
        service.stop()


async def wait_for_group_coordinators(
    bootstrap_servers: str, groups: Sequence[str], timeout: float = 60.0
) -> None:
    """Until the broker names a coordinator for each consumer group.

    A fresh broker creates ``__consumer_offsets`` at the first coordinator lookup and
    answers "not available" until its partitions have leaders; consumers that join
    meanwhile log that as an error and retry. Asking here first, before any service
    starts, means the services find a working coordinator at their first try.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        for group in groups:
            while True:
                try:
                    await admin.find_coordinator(group)
                    break
                except KafkaError as exc:
                    if not exc.retriable or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def prepare_broker(kafka: LocalKafka, partitions: int) -> None:
    """Topics, and a coordinator for the groups of scoring, pipeline and webhooks."""
    settings = LeadflowSettings()
    await create_topics(kafka.client_settings(settings), partitions)
    groups = [
        ScoringSettings().scoring_group,
        PipelineSettings().pipeline_group,
        WebhooksSettings().webhooks_group,
    ]
    await wait_for_group_coordinators(kafka.bootstrap_servers, groups)


def run_system(data_dir: Path, services: Sequence[str], partitions: int, ports: Ports) -> int:
    """Run until Ctrl-C; returns the exit status (non-zero if a service died).

    Raises :class:`devtools.instance_lock.AlreadyRunning` when another run holds
    ``data_dir``.
    """
    with holding(data_dir):
        return _run(data_dir, services, partitions, ports)


def _run(data_dir: Path, services: Sequence[str], partitions: int, ports: Ports) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        say("leadflow", f"{signal.Signals(signum).name}: stopping")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    kafka = LocalKafka(data_dir / "kafka", port=ports.kafka)
    say("kafka", f"starting Kafka (KRaft) on {kafka.bootstrap_servers}; log: {kafka.log_file}")
    kafka.start()
    running: list[ServiceProcess] = []
    status = 0
    try:
        asyncio.run(prepare_broker(kafka, partitions))
        names = ", ".join(s.name for s in LeadflowSettings().topics.specs())
        say("kafka", f"topics ready: {names}")
        for name in services:
            env = child_environment(os.environ, name, ports, data_dir)
            process = ServiceProcess(name, env, inherit_environment=False, sink=say)
            running.append(process.start())
            say("leadflow", f"{name} on http://127.0.0.1:{ports.of(name)}")
        while not stop.wait(0.5):
            dead = [s for s in running if not s.running]
            if dead:
                for service in dead:
                    say("leadflow", f"{service.name} exited with {service.returncode}")
                status = 1
                break
    finally:
        stop_services(running)
        kafka.stop()
        say("leadflow", "stopped")
    return status
