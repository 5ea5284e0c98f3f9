"""One scoring worker's lead states, restored in a process of their own: memory and time.

``python -m bench.lead_memory --sample FILE --leads N`` reads a changelog (the records a
worker wrote for the bench stream, compacted: the last record of each lead) and folds
copies of it into one :class:`~services.scoring.changelog.PartitionState` through
:func:`~services.scoring.changelog.apply_record`, the function the worker's restore hands
every record it reads, until ``N`` leads are held. Each copy renames its leads (and their
event ids) by swapping the sample's run id for the copy's, so no two copies share a string.
Prints one JSON object: the resident memory it took (RSS after minus before, both after
a full collection), the time spent in ``apply_record`` (the broker's fetch is not in it),
and, with ``--footprint K``, where the bytes of K of the leads go.

A process of its own per measurement, so memory freed by an earlier one cannot be reused
and hide what this one takes.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.footprint import footprint, total
from services.scoring.changelog import PartitionState, apply_record
from services.scoring.lead import LeadState

Sample = tuple[bytes, list[tuple[bytes, bytes]]]
"""The sample's run id, and its changelog records (one per lead)."""


def renamed(sample: Sample, copy: int, count: int) -> list[tuple[bytes, bytes]]:
    """The first ``count`` records of the sample, its run id swapped for the copy's (the
    same length: the records keep their sizes)."""
    run, records = sample
    token = f"{copy:0{len(run)}x}".encode()
    if len(token) != len(run) or token == run:
        raise ValueError(f"copy {copy} has no token of {len(run)} characters")
    return [(key.replace(run, token), value.replace(run, token)) for key, value in records[:count]]


def restore(sample: Sample, leads: int) -> tuple[PartitionState, float]:
    """The state of ``leads`` leads and the seconds ``apply_record`` took for them."""
    state = PartitionState()
    spent, copy = 0.0, 0
    while len(state.leads) < leads:
        chunk = renamed(sample, copy, leads - len(state.leads))
        started = time.perf_counter()
        for key, value in chunk:
            apply_record(state, key, value)
        spent += time.perf_counter() - started
        copy += 1
    return state, spent


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def measure(
    sample: Sample, leads: int, *, trace: bool, sampled: int, gc_on: bool
) -> dict[str, Any]:
    before = rss()
    if trace:
        tracemalloc.start()
    if not gc_on:
        gc.disable()
    state, seconds = restore(sample, leads)
    gc.enable()
    traced = tracemalloc.get_traced_memory()[0] if trace else 0
    tracemalloc.stop()
    after = rss()
    result: dict[str, Any] = {
        "leads": len(state.leads),
        "gc_during_restore": gc_on,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_bytes_per_lead": (after - before) / len(state.leads),
        "restore_seconds": seconds,
        "leads_per_s": len(state.leads) / seconds,
        "record_bytes_per_lead": sum(len(v) for _, v in sample[1]) / len(sample[1]),
    }
    if trace:
        result["traced_bytes_per_lead"] = traced / len(state.leads)
    if sampled:
        result["footprint"] = where_bytes_go(state, sampled)
    return result


def where_bytes_go(state: PartitionState, sampled: int) -> dict[str, Any]:
    """Bytes per lead by (field, type), over the first ``sampled`` leads; the partition's
    dict of leads (its table) divided over all of them."""
    picked = [item for _, item in zip(range(sampled), state.leads.items(), strict=False)]
    roots: list[tuple[str, object]] = []
    for lead_id, lead in picked:
        roots += [("leads key", lead_id), ("LeadState", lead)]
    shares = footprint(roots, by_field=(LeadState,))
    per_lead = {
        f"{label} {kind}": {
            "objects": round(share.objects / len(picked), 2),
            "bytes": round(share.bytes / len(picked), 1),
        }
        for (label, kind), share in sorted(shares.items(), key=lambda kv: -kv[1].bytes)
    }
    table = sys.getsizeof(state.leads) / len(state.leads)
    per_lead["leads dict (table)"] = {"objects": 0.0, "bytes": round(table, 1)}
    return {
        "sampled_leads": len(picked),
        "bytes_per_lead": round(total(shares) / len(picked) + table, 1),
        "by_field_and_type": per_lead,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lead_memory", description=__doc__)
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--trace", action="store_true", help="also count with tracemalloc")
    parser.add_argument("--footprint", type=int, default=0, help="walk this many leads")
    parser.add_argument("--no-gc", action="store_true", help="the collector off meanwhile")
    args = parser.parse_args(argv)
    with args.sample.open("rb") as file:
        sample: Sample = pickle.load(file)
    result = measure(
        sample, args.leads, trace=args.trace, sampled=args.footprint, gc_on=not args.no_gc
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
