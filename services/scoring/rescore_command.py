"""``leadflow rescore --model new.yaml``: the dry-run report, then, with ``--publish``, the
switch; the terminal's side of :mod:`services.scoring.rescore`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.scoring.model import ModelError, ScoringModel, load_model
from services.scoring.rescore import RescoreRefused, dry_run, publish, wait_for_switch
from services.scoring.rescore_report import render_text
from services.scoring.settings import ScoringSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the new model's YAML file")
    parser.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="after the report, make the model live (every lead rescored by the workers)",
    )
    parser.add_argument(
        "--accept-partial-history",
        action="store_true",
        help="publish even where leadflow.events no longer holds every event (retention)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="replay processes (default: one per partition, up to twice the cores)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="with --publish: do not wait for the switch"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = ScoringSettings()
        model = load_model(args.model)
        file_model = load_model(settings.scoring_model)
    except (ModelError, ValidationError) as exc:
        return _fail(str(exc))
    try:
        return asyncio.run(_rescore(args, settings, model, file_model))
    except RescoreRefused as exc:
        return _fail(f"not published: {exc}")
    except (KafkaError, OSError, TimeoutError, LookupError) as exc:
        return _fail(f"Kafka at {settings.kafka_bootstrap_servers}: {exc!r}")


async def _rescore(
    args: argparse.Namespace,
    settings: ScoringSettings,
    model: ScoringModel,
    file_model: ScoringModel,
) -> int:
    report = await dry_run(settings, model, args.processes)
    sys.stdout.write(render_text(report))
    replay = report["replay"]
    sys.stdout.write(
        f"\nreplayed {replay['records']} records of {settings.topics.events}"
        f" in {replay['seconds']:.1f}s ({replay['refused']} refused, as they were live)\n"
    )
    if args.report is not None:
        args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        sys.stdout.write(f"report written to {args.report}\n")
    if not args.publish:
        sys.stdout.write("dry run: nothing changed; --publish makes the model live\n")
        return 0
    offsets = await publish(
        settings, model, file_model, report, partial_history=args.accept_partial_history
    )
    sys.stdout.write(
        f"published {model.version}: switch records at {dict(sorted(offsets.items()))}\n"
    )
    if args.no_wait:
        return 0

    def progress(done: int, total: int) -> None:
        sys.stdout.write(f"  {done}/{total} partitions scoring under {model.version}\n")
        sys.stdout.flush()

    await wait_for_switch(settings, offsets, progress)
    sys.stdout.write(f"{model.version} is live\n")
    return 0


def _fail(line: str) -> int:
    sys.stderr.write(f"leadflow rescore: {line}\n")
    return 1
