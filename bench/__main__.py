"""``python -m bench [--cases a,b] [--quick]``: run the cases, print one table, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import RESULTS_DIR, BenchEnv, Config, MachineLoad
from bench.stats import Row, markdown_lines, table_lines, write, write_json

CASES = (
    "ingest_batch",
    "segment_batch",
    "ingest_single",
    "scoring",
    "pipeline",
    "end_to_end",
    "query",
    "analytics",
    "scaling",
    "webhooks",
    "rescore",
    "memory",
)
"""Every case, one module each (``bench/<case>.py`` with ``async def run(env, config)``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated cases to run (default: all): {', '.join(CASES)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a pass in minutes")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per side (>= 3)")
    parser.add_argument("--warmups", type=int, default=1, help="discarded runs first")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--single-rate", type=float, default=0.0, help="ingest_single req/s")
    parser.add_argument(
        "--e2e-rate",
        type=float,
        default=0.0,
        help="end_to_end: the latency runs at this events/s and at twice it "
        "(skips the burst and the ladder)",
    )
    parser.add_argument(
        "--fresh-data",
        action="store_true",
        help="build cached datasets (the analytics case's) anew rather than reuse them",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every process started with py-spy (raw stacks next to the JSON); "
        "slows the processes down, so do not compare those numbers",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and broker data")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    return parser


async def run_cases(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    config = Config(
        quick=args.quick,
        runs=args.runs,
        warmups=args.warmups,
        scale=args.scale,
        single_rate=args.single_rate,
        e2e_rate=args.e2e_rate,
        fresh_data=args.fresh_data,
    )
    profile_dir = args.out / f"{stamp}-profiles" if args.profile else None
    env = BenchEnv(profile_dir=profile_dir)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    load: dict[str, dict[str, Any]] = {}
    write(f"leadflow benchmarks: {', '.join(names)} ({'quick' if args.quick else 'full'})")
    write(f"  work folder: {env.root}")
    try:
        for name in names:
            write(f"== {name}")
            started = time.monotonic()
            neighbours = MachineLoad()
            module = importlib.import_module(f"bench.{name}")
            try:
                case_rows: list[Row] = await module.run(env, config)
            except Exception:
                failures[name] = traceback.format_exc()
                write(f"  {name} FAILED:\n{failures[name]}")
                case_rows = []
            durations[name] = round(time.monotonic() - started, 1)
            load[name] = neighbours.report(env.own_roots())
            if load[name]["foreign_cores"] > 0.1:
                write(
                    f"  WARNING: other processes used {load[name]['foreign_cores']} cores during"
                    f" {name} ({load[name]['foreign_top']}): its numbers are skewed"
                )
            rows.extend(case_rows)
            for line in table_lines(case_rows):
                write(f"  {line}")
        machine = await asyncio.to_thread(env.machine)
        if env.has_postgres:
            machine["postgresql"] = await env.postgres_version()
    finally:
        env.close(keep=args.keep)
    return {
        "started_at": stamp,
        "command": "python -m bench " + " ".join(_argv(args)),
        "config": {
            "cases": names,
            "quick": args.quick,
            "runs": args.runs,
            "warmups": args.warmups,
            "scale": args.scale,
            "profile": args.profile,
        },
        "machine": machine,
        "durations_s": durations,
        "machine_load": load,
        "failures": failures,
        "rows": rows,
    }


def _argv(args: argparse.Namespace) -> list[str]:
    argv = [f"--cases {args.cases}"]
    if args.quick:
        argv.append("--quick")
    if args.runs != 3:
        argv.append(f"--runs {args.runs}")
    if args.scale != 1.0:
        argv.append(f"--scale {args.scale}")
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 3:
        write("note: fewer than 3 runs gives no meaningful spread")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    # a fresh topic's first produce may meet a leader still moving in: retried, not news
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = asyncio.run(run_cases(args, stamp))
    rows: list[Row] = result["rows"]
    write()
    write("Results: median [min-max] of the measured runs; ratio = fraction of the raw limit")
    write("(throughput: leadflow/raw, latency: raw/leadflow; higher is better)")
    write()
    for line in table_lines(rows):
        write(line)
    if args.markdown:
        write()
        for line in markdown_lines(rows):
            write(line)
    path = args.out / f"{stamp}.json"
    write_json(path, {**result, "rows": [row.to_dict() for row in rows]})
    write()
    write(f"written to {path}")
    busy = {
        k: v["foreign_cores"] for k, v in result["machine_load"].items() if v["foreign_cores"] > 0.1
    }
    if busy:
        write(f"WARNING: the machine was shared (cores used by other processes): {busy}")
    if result["failures"]:
        write(f"failed cases: {', '.join(result['failures'])}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
