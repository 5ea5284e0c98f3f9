"""``leadflow``: one command, a subcommand per process."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

if TYPE_CHECKING:
    from devtools.settings import DeveloperSettings
    from devtools.system import Ports

SERVICES = ("ingest", "scoring", "pipeline", "webhooks")
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
            port = args.port or _developer_settings("kafka").kafka_port
            kafka = LocalKafka(args.data_dir / "kafka", port=port)
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
    """Create the missing topics on an existing cluster, connecting as the services do
    (LEADFLOW_KAFKA_BOOTSTRAP_SERVERS and the Kafka security settings)."""
    settings = LeadflowSettings()
    report = asyncio.run(
        create_topics(
            settings,
            args.partitions,
            replication_factor=args.replication_factor,
            min_insync_replicas=args.min_insync_replicas,
        )
    )
    for spec in report.created:
        config = ", ".join(f"{key}={value}" for key, value in sorted(spec.config.items()))
        print(  # noqa: T201 - the command's output
            f"created {spec.name}: {spec.partitions or args.partitions} partitions, "
            f"replication factor {args.replication_factor}" + (f", {config}" if config else "")
        )
    for name in report.existing:
        print(f"{name} exists already: left as it is, not altered")  # noqa: T201
    return 0


def _service(name: str) -> int:
    module = importlib.import_module(f"services.{name}.__main__")
    module.main()  # a configuration that cannot work exits 2 with one line (shared/server.py)
    return 0


def _run(args: argparse.Namespace) -> int:
    from devtools.instance_lock import AlreadyRunning
    from devtools.system import run_system

    ports = run_ports(args)
    available = [name for name in SERVICES if _has_service(name)]
    try:
        return run_system(args.data_dir, available, args.partitions, ports)
    except AlreadyRunning as exc:
        return _fail(f"leadflow run: {exc}")


def run_ports(args: argparse.Namespace) -> Ports:
    """Each port from its option, else its ``LEADFLOW_*_PORT``, else the usual one."""
    from devtools.system import Ports

    env = _developer_settings("run")
    return Ports(
        kafka=args.kafka_port or env.kafka_port,
        ingest=args.ingest_port or env.ingest_port,
        scoring=args.scoring_port or env.scoring_port,
        pipeline=args.pipeline_port or env.pipeline_port,
        webhooks=args.webhooks_port or env.webhooks_port,
    )


def _demo(args: argparse.Namespace) -> int:
    from devtools.demo import DemoFailed, run_demo

    env = _developer_settings("demo")
    ingest_url = args.ingest_url or f"http://127.0.0.1:{env.ingest_port}"
    pipeline_url = args.pipeline_url or f"http://127.0.0.1:{env.pipeline_port}"
    api_key = args.api_key or env.demo_api_key
    try:
        asyncio.run(run_demo(ingest_url, pipeline_url, args.leads, args.seed, api_key))
    except DemoFailed as exc:
        return _fail(f"leadflow demo: {exc}")
    return 0


def _import(args: argparse.Namespace) -> int:
    """Exit 0 when every event of the file is in the system (dry: would be), 1 when some
    are not (each named in the summary), 2 when the file or the settings cannot be used."""
    from pydantic import ValidationError

    from shared.backfill.command import ImportOptions, run_command
    from shared.backfill.settings import ImportSettings

    try:
        settings = ImportSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"LEADFLOW_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.stderr.write(f"leadflow import: {problems}\n")
        return 2
    key = settings.import_api_key
    options = ImportOptions(
        path=args.file,
        file_format=args.format,
        ingest_url=args.ingest_url or settings.ingest_url,
        pipeline_url=args.pipeline_url or settings.pipeline_url,
        api_key=args.api_key or (key.get_secret_value() if key else None),
        horizon_days=args.horizon_days or settings.dedup_horizon_days,
        lead_id_rule=settings.lead_id_normalization,
        batch_size=args.batch_size,
        attempts=args.attempts,
        strict=args.strict,
        dry_run=args.dry_run,
        wait_seconds=args.wait,
    )
    try:
        return asyncio.run(run_command(options))
    except KeyboardInterrupt:
        sys.stderr.write(
            "leadflow import: interrupted; what was accepted stays, and running the same "
            "file again resends the rest safely (scoring counts each event_id once)\n"
        )
        return 130


def _fail(line: str) -> int:
    """One line on stderr and a non-zero status: what a person needs, no traceback."""
    sys.stderr.write(line + "\n")
    return 1


def _developer_settings(command: str) -> DeveloperSettings:
    """The defaults of the developer commands' options; a bad variable: one line, exit 1."""
    from pydantic import ValidationError

    from devtools.settings import DeveloperSettings

    try:
        return DeveloperSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"LEADFLOW_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"leadflow {command}: {problems}") from None


def _keys_create(args: argparse.Namespace) -> int:
    from shared.api_keys import KeyLineError, create_key

    try:
        key, line = create_key(args.name, args.scopes.split(","))
    except KeyLineError as exc:
        sys.stderr.write(f"leadflow keys create: {exc}\n")
        return 2
    sys.stdout.write(
        f"API key of {args.name} (shown this once; give it to the client):\n  {key}\n"
        "Store this line in LEADFLOW_API_KEYS_FILE (or LEADFLOW_API_KEYS); it holds only\n"
        f"the key's SHA-256:\n  {line}\n"
    )
    return 0


def _rescore_command() -> Any:
    return importlib.import_module("services.scoring.rescore_command")


def _has_service(name: str) -> bool:
    return (Path(__file__).resolve().parent.parent / "services" / name / "__main__.py").exists()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the whole system: Kafka, topics, the four services")
    run.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    run.add_argument("--partitions", type=int, default=3)
    usual_ports = (
        ("kafka", 9092),
        ("ingest", 8001),
        ("scoring", 8002),
        ("pipeline", 8003),
        ("webhooks", 8004),
    )
    for name, usual in usual_ports:
        variable = f"LEADFLOW_{name.upper()}_PORT"
        run.add_argument(
            f"--{name}-port", type=int, help=f"on 127.0.0.1 (default: ${variable}, else {usual})"
        )
    run.set_defaults(handler=_run)

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker with the topics")
    kafka.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    kafka.add_argument("--port", type=int, help="default: $LEADFLOW_KAFKA_PORT, else 9092")
    kafka.add_argument("--partitions", type=int, default=3)
    kafka.set_defaults(handler=_kafka)

    topics = commands.add_parser("topics", help="create the topics on an existing cluster")
    topics.add_argument("--partitions", type=int, default=3)
    topics.add_argument(
        "--replication-factor", type=int, default=1, help="3 on a production cluster"
    )
    topics.add_argument(
        "--min-insync-replicas",
        type=int,
        default=None,
        help="min.insync.replicas of each topic created (2 with 3 replicas); "
        "default: the cluster's",
    )
    topics.set_defaults(handler=_topics)

    demo = commands.add_parser("demo", help="post a synthetic stream, show the funnel")
    demo.add_argument("--ingest-url", help="default: 127.0.0.1, $LEADFLOW_INGEST_PORT or 8001")
    demo.add_argument("--pipeline-url", help="default: 127.0.0.1, $LEADFLOW_PIPELINE_PORT or 8003")
    demo.add_argument(
        "--api-key",
        help="sent as a bearer token to ingest and pipeline (default: $LEADFLOW_DEMO_API_KEY)",
    )
    demo.add_argument("--leads", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=_demo)

    backfill = commands.add_parser(
        "import",
        help="load historical events (JSON Lines or CSV) through ingest",
        description="Load historical events through ingest, in time order per lead; "
        "progress on stderr, a summary at the end (README: Backfilling history).",
    )
    backfill.add_argument("file", type=Path, help="events.jsonl (.ndjson) or events.csv")
    backfill.add_argument(
        "--format", choices=("jsonl", "csv"), help="default: from the file's extension"
    )
    backfill.add_argument("--ingest-url", help="default: $LEADFLOW_INGEST_URL, else :8001")
    backfill.add_argument("--pipeline-url", help="default: $LEADFLOW_PIPELINE_URL, else :8003")
    backfill.add_argument(
        "--api-key",
        help="bearer token for ingest (events:write, crm:write for CRM events) and the "
        "pipeline (leads:read); default: $LEADFLOW_IMPORT_API_KEY",
    )
    backfill.add_argument(
        "--horizon-days",
        type=float,
        help="scoring's de-duplication horizon (default: $LEADFLOW_DEDUP_HORIZON_DAYS, else 30)",
    )
    backfill.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="events per POST (at most ingest's LEADFLOW_MAX_BATCH_EVENTS, 1000 by default)",
    )
    backfill.add_argument(
        "--attempts", type=int, default=8, help="tries per request on 429, 503, no connection"
    )
    backfill.add_argument(
        "--strict",
        action="store_true",
        help="send nothing if any row is invalid or any lead is refused",
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="check and plan, print the summary, send nothing"
    )
    backfill.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="at the end, wait this long at most for the pipeline to show every lead "
        "touched (0: do not wait)",
    )
    backfill.set_defaults(handler=_import)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="a new API key, and the line that stores it")
    create.add_argument("--name", required=True, help="who holds it, e.g. mailer")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: events:write, crm:write, leads:read, admin",
    )
    create.set_defaults(handler=_keys_create)

    rescore = commands.add_parser(
        "rescore", help="a new scoring model's dry run over all events; --publish makes it live"
    )
    _rescore_command().add_arguments(rescore)
    rescore.set_defaults(handler=lambda args: _rescore_command().run(args))

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
