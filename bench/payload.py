"""Realistic events of about 300 bytes: the synthetic stream plus the context platforms send.

:func:`devtools.synthetic.synthetic_stream` gives the shape of a real funnel (traits, a heavy
tail of engaged leads, six weeks of event time, in time order); marketing platforms also
send campaign and session context, which is what brings a real event to ~300 bytes.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from devtools.synthetic import synthetic_stream
from shared.events import Event
from shared.kafka import encode_key

DEVICES = ["desktop", "mobile", "tablet"]
SOURCES = ["newsletter", "linkedin", "google", "partner", "direct"]


def bench_events(count: int, *, run_id: str, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` native events (JSON-ready dicts), in event-time order across leads."""
    rng = random.Random(seed)
    leads = max(1, count // 12)
    while True:
        events = list(_with_context(synthetic_stream(leads=leads, seed=seed, run_id=run_id), rng))
        if len(events) >= count:
            return events[:count]
        leads = int(leads * 1.2) + 1


def _with_context(stream: Iterator[dict[str, Any]], rng: random.Random) -> Iterator[dict[str, Any]]:
    for event in stream:
        properties = dict(event["properties"])
        properties["session_id"] = f"{rng.getrandbits(64):016x}"
        properties["device"] = rng.choice(DEVICES)
        if event["type"] != "lead.updated":
            properties["utm_source"] = rng.choice(SOURCES)
        yield {**event, "properties": properties}


def record_values(events: Sequence[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` exactly as ingest writes them to ``leadflow.events``."""
    records = []
    for raw in events:
        event = Event.model_validate(raw)
        records.append((encode_key(event.lead_id), event.to_json()))
    return records


def batch_bodies(events: Sequence[dict[str, Any]], size: int) -> list[bytes]:
    """JSON array bodies for ``POST /v1/events/batch``, ``size`` events each."""
    return [orjson.dumps(list(events[i : i + size])) for i in range(0, len(events), size)]


def mean_record_bytes(records: Sequence[tuple[bytes, bytes]]) -> float:
    return statistics.fmean(len(value) for _, value in records) if records else 0.0
