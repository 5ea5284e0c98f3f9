"""``leadflow``: one command, a subcommand per process."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

SERVICES = ("ingest", "scoring", "pipeline")
DEFAULT_DATA_DIR = Path(".leadflow")


def _kafka(args: argparse.Namespace) -> int:
    """Just the broker and the topics, until Ctrl-C."""
    from devtools.broker import LocalKafka
    from devtools.instance_lock import AlreadyRunning, holding
    from devtools.system import prepare_broker, say

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with holding(args.data_dir):
            kafka = LocalKafka(args.data_dir / "kafka", port=args.port)
            kafka.start()
            try:
                asyncio.run(prepare_broker(kafka, args.partitions))
                say("kafka", f"ready on {kafka.bootstrap_servers}; Ctrl-C stops it")
                stop.wait()
            finally:
                kafka.stop()
    except AlreadyRunning as exc:
        return _fail(f"leadflow kafka: {exc}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    """Create the topics on an existing cluster (LEADFLOW_KAFKA_BOOTSTRAP_SERVERS)."""
    settings = LeadflowSettings()
    asyncio.run(
        create_topics(
            settings.kafka_bootstrap_servers,
            settings.topics,
            args.partitions,
            replication_factor=args.replication_factor,
        )
    )
    return 0


def _service(name: str) -> int:
    module = importlib.import_module(f"services.{name}.__main__")
    module.main()
    return 0


def _run(args: argparse.Namespace) -> int:
    from devtools.instance_lock import AlreadyRunning
    from devtools.system import Ports, run_system

    ports = Ports(args.kafka_port, args.ingest_port, args.scoring_port, args.pipeline_port)
    available = [name for name in SERVICES if _has_service(name)]
    try:
        return run_system(args.data_dir, available, args.partitions, ports)
    except AlreadyRunning as exc:
        return _fail(f"leadflow run: {exc}")


def _demo(args: argparse.Namespace) -> int:
    from devtools.demo import DemoFailed, run_demo

    try:
        asyncio.run(
            run_demo(args.ingest_url, args.pipeline_url, args.leads, args.seed, args.api_key)
        )
    except DemoFailed as exc:
        return _fail(f"leadflow demo: {exc}")
    return 0


def _fail(line: str) -> int:
    """One line on stderr and a non-zero status: what a person needs, no traceback."""
    sys.stderr.write(line + "\n")
    return 1


def _from_env(name: str, default: object) -> str:
    """An option's default from ``LEADFLOW_*``; argparse converts (and checks) it as typed."""
    return os.environ.get(name, str(default))


def _has_service(name: str) -> bool:
    return (Path(__file__).resolve().parent.parent / "services" / name / "__main__.py").exists()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the whole system: Kafka, topics, the three services")
    run.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    run.add_argument("--partitions", type=int, default=3)
    for name, default in (("kafka", 9092), ("ingest", 8001), ("scoring", 8002), ("pipeline", 8003)):
        variable = f"LEADFLOW_{name.upper()}_PORT"
        run.add_argument(
            f"--{name}-port",
            type=int,
            default=_from_env(variable, default),
            help=f"{name}'s port on 127.0.0.1 (default: ${variable}, else {default})",
        )
    run.set_defaults(handler=_run)

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker with the topics")
    kafka.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    kafka.add_argument(
        "--port", type=int, default=_from_env("LEADFLOW_KAFKA_PORT", 9092), help="as run's"
    )
    kafka.add_argument("--partitions", type=int, default=3)
    kafka.set_defaults(handler=_kafka)

    topics = commands.add_parser("topics", help="create the topics on an existing cluster")
    topics.add_argument("--partitions", type=int, default=3)
    topics.add_argument(
        "--replication-factor", type=int, default=1, help="3 on a production cluster"
    )
    topics.set_defaults(handler=_topics)

    demo = commands.add_parser("demo", help="post a synthetic stream, show the funnel")
    ingest_port = os.environ.get("LEADFLOW_INGEST_PORT", "8001")
    pipeline_port = os.environ.get("LEADFLOW_PIPELINE_PORT", "8003")
    demo.add_argument("--ingest-url", default=f"http://127.0.0.1:{ingest_port}")
    demo.add_argument("--pipeline-url", default=f"http://127.0.0.1:{pipeline_port}")
    demo.add_argument(
        "--api-key",
        default=os.environ.get("LEADFLOW_DEMO_API_KEY"),
        help="sent as a bearer token to ingest and pipeline (default: $LEADFLOW_DEMO_API_KEY)",
    )
    demo.add_argument("--leads", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=_demo)

    for name in SERVICES:
        service = commands.add_parser(name, help=f"the {name} service")
        service.set_defaults(handler=lambda _args, name=name: _service(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
