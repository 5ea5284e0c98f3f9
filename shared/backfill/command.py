"""``leadflow import FILE``: the file read and checked, the plan, the sending, the summary.

Progress and retries go to stderr as they happen; the summary, at the end, to stdout.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shared.backfill.client import HttpIngest, HttpLeadFacts, client
from shared.backfill.formats import FileProblem, Format, format_of, read_rows
from shared.backfill.plan import check
from shared.backfill.run import ImportStopped, Summary, prepare, send_plan, wait_until_shown
from shared.lead_ids import LeadIdRule

PREFIX = "leadflow import: "


@dataclass(frozen=True, slots=True)
class ImportOptions:
    path: Path
    file_format: Format | None
    ingest_url: str
    pipeline_url: str
    api_key: str | None
    horizon_days: float
    lead_id_rule: LeadIdRule
    batch_size: int = 500
    attempts: int = 8
    strict: bool = False
    dry_run: bool = False
    wait_seconds: float = 300.0


def say(line: str) -> None:
    sys.stderr.write(line + "\n")


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """The retries' warnings, where the progress is (no service logging is set up here)."""
    log = logging.getLogger("leadflow.import")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(PREFIX + "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = True


async def run_command(options: ImportOptions) -> int:
    with _warnings_to_stderr():
        return await _run(options)


async def _run(options: ImportOptions) -> int:
    started = time.monotonic()
    path = options.path
    file_format = options.file_format or format_of(path.name)
    if file_format is None:
        say(f"{PREFIX}cannot tell the format of {path} from its name: give --format jsonl or csv")
        return 2
    if options.batch_size < 1 or options.attempts < 1:
        say(f"{PREFIX}--batch-size and --attempts must be at least 1")
        return 2
    try:
        with path.open(encoding="utf-8-sig", newline="") as lines:  # -sig: Excel's BOM
            checked = check(read_rows(lines, file_format), options.lead_id_rule)
    except (OSError, UnicodeDecodeError) as exc:
        say(f"{PREFIX}cannot read {path}: {exc}")
        return 2
    except FileProblem as exc:
        say(f"{PREFIX}{path}: {exc}")
        return 2
    leads = len(checked.lead_ids)
    say(
        f"{PREFIX}{path}: {checked.read} rows, {len(checked.events)} valid events "
        f"of {leads} leads; reading what the pipeline holds of them"
    )
    horizon = timedelta(days=options.horizon_days)
    async with (
        client(options.pipeline_url, options.api_key) as pipeline,
        client(options.ingest_url, options.api_key) as ingest,
    ):
        facts = HttpLeadFacts(pipeline, options.attempts)
        try:
            planned = await prepare(checked, facts, horizon)
        except ImportStopped as exc:
            say(f"{PREFIX}{exc}")
            return 1
        summary = Summary(checked, planned, dry_run=options.dry_run)
        if options.strict and (checked.errors or planned.refused):
            summary.stopped = "--strict, and the file has invalid rows or refused leads"
        elif not options.dry_run:
            await send_plan(
                summary,
                HttpIngest(ingest, options.attempts),
                options.batch_size,
                progress=lambda progress: say(progress.line()),
            )
            if options.wait_seconds > 0:
                await wait_until_shown(summary, facts, options.wait_seconds, say)
    summary.elapsed = time.monotonic() - started
    sys.stdout.write("".join(line + "\n" for line in summary.lines()))
    return 0 if summary.complete else 1
