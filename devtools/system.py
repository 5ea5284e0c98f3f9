"""The whole system on one machine: broker, topics, migrations, the three services.

Each service is its own process, as in production; their output is prefixed
with the service name so one terminal stays readable. Ctrl-C (or SIGTERM)
stops the services first, then the broker, and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devtools.broker import LocalKafka
from devtools.processes import ServiceProcess
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

COLOURS = {"kafka": "90", "ingest": "36", "scoring": "35", "pipeline": "33", "leadflow": "1"}


def say(source: str, line: str) -> None:
    colour = COLOURS.get(source, "0")
    prefix = f"\x1b[{colour}m{source:<8}|\x1b[0m " if sys.stdout.isatty() else f"{source:<8}| "
    sys.stdout.write(prefix + line.rstrip("\n") + "\n")
    sys.stdout.flush()


def stop_services(services: Sequence[ServiceProcess]) -> None:
    """Services first and all at once (SIGTERM), so each drains while the others do."""
    for service in services:
        if service.running:
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
    for service in services:
        service.stop()


def run_system(data_dir: Path, services: Sequence[str], partitions: int = 3) -> int:
    """Run until Ctrl-C; returns the exit status (non-zero if a service died)."""
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        say("leadflow", f"{signal.Signals(signum).name}: stopping")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    settings = LeadflowSettings()
    port = int(settings.kafka_bootstrap_servers.rsplit(":", 1)[1])
    kafka = LocalKafka(data_dir / "kafka", port=port)
    say("kafka", f"starting Kafka (KRaft) on {kafka.bootstrap_servers}; log: {kafka.log_file}")
    kafka.start()
    running: list[ServiceProcess] = []
    status = 0
    try:
        asyncio.run(create_topics(settings, partitions))
        say("kafka", f"topics ready: {', '.join(s.name for s in settings.topics.specs())}")
        env = {
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LEADFLOW_DATABASE_URL": os.environ.get(
                "LEADFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'leadflow.db'}"
            ),
        }
        running = [ServiceProcess(name, env, sink=say).start() for name in services]
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
