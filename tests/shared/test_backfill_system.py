"""``leadflow import`` against the real system: ingest, scoring and the pipeline on the real
broker. What it loads must score exactly as the pure model folded over the file's events
in time order, and history beyond the horizon of a live lead must be refused, not
dead-lettered."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.cli import main
from shared.kafka import make_consumer
from shared.settings import LeadflowSettings
from tests.reference import reference, score_mismatches
from tests.servers import serving
from tests.topics import read_records
from tests.waiting import eventually

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 9, tzinfo=UTC)
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


@dataclass
class System:
    ingest_url: str
    pipeline_url: str
    ingest: httpx.AsyncClient
    pipeline: httpx.AsyncClient
    settings: LeadflowSettings


@pytest.fixture
async def system(kafka_settings: LeadflowSettings, tmp_path: Path) -> AsyncIterator[System]:
    common = kafka_settings.model_dump()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'pipeline.db'}"
    with ExitStack() as servers:
        ingest_url = servers.enter_context(serving(create_ingest(IngestSettings(**common))))
        servers.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline_settings = PipelineSettings(**common, database_url=database_url)
        pipeline_url = servers.enter_context(serving(create_pipeline(pipeline_settings)))
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest,
            httpx.AsyncClient(base_url=pipeline_url, timeout=30) as pipeline,
        ):
            yield System(ingest_url, pipeline_url, ingest, pipeline, kafka_settings)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def ev(lead: str, n: int, kind: str, days: float, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{lead}/{n}",
        "type": kind,
        "lead_id": lead,
        "occurred_at": at(days),
        **fields,
    }


def history(lead: str) -> list[dict[str, Any]]:
    """Four months of one lead, written out of order: traits, capped pricing views on one
    day, e-mails, a webinar, a CRM recycle; its span is several horizons long."""
    pricing = {"path": "/pricing"}
    return [
        ev(lead, 9, "webinar.attended", 110),
        ev(lead, 0, "lead.updated", 0, traits={"industry": "saas", "employees": 200}),
        *(ev(lead, 1 + i, "page.viewed", 3, properties=pricing) for i in range(5)),
        ev(lead, 6, "email.clicked", 40),
        ev(lead, 7, "lead.updated", 60, traits={"budget_usd": 20000, "job_level": "vp"}),
        ev(lead, 8, "form.submitted", 80),
        ev(lead, 10, "stage.set", 115, properties={"stage": "lead", "reason": "recycle"}),
        ev(lead, 11, "email.opened", 116),
    ]


async def run_import(*argv: str) -> int:
    """The command as a person runs it (its own event loop, as from a shell)."""
    return await asyncio.to_thread(main, ["import", *argv])


def served(system: System) -> Any:
    async def leads() -> dict[str, dict[str, Any]]:
        page = (await system.pipeline.get("/v1/leads", params={"limit": 1000})).json()
        return {lead["lead_id"]: lead for lead in page["items"]}

    return leads


async def scored_as(system: System, events: Sequence[dict[str, Any]]) -> None:
    """Until the pipeline serves every lead exactly as the reference scores ``events``."""
    in_time_order: list[dict[str, Any]] = sorted(events, key=lambda e: str(e["occurred_at"]))
    expected = reference(in_time_order)
    await eventually(
        served(system),
        lambda leads: not score_mismatches(expected, leads),
        timeout=60,
        interval=0.2,
    )


async def no_dead_letters(settings: LeadflowSettings) -> None:
    """Nothing on ``leadflow.dead-letters``: once what was sent is scored, its batches'
    transactions (dead letters included) are committed, so the end offsets are final."""
    topic = settings.topics.dead_letters
    consumer = make_consumer(settings, topic, name="test-dead-letters", group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        numbers = consumer.partitions_for_topic(topic)
        assert numbers
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in numbers])
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 0


def urls(system: System) -> list[str]:
    return ["--ingest-url", system.ingest_url, "--pipeline-url", system.pipeline_url]


async def test_jsonl_and_csv_files_score_as_the_model_over_their_events(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ada, bob = history("ada@example.com"), history("bob@example.com")
    jsonl = tmp_path / "events.jsonl"
    lines = [orjson.dumps(event).decode() for event in ada]
    lines.insert(4, lines[2])  # an exporter's repeated line: sent once
    lines.insert(6, '{"lead_id": "ada@example.com", "type": "email.opened"}')  # no time
    jsonl.write_text("\n".join(lines) + "\n")

    assert await run_import(str(jsonl), *urls(system), "--batch-size", "3") == 1
    out, err = capsys.readouterr()
    assert "line 7: occurred_at: Field required" in out
    assert "duplicates  1 rows" in out
    assert "sent        12" in out
    assert "accepted    12" in out
    assert "leads       1 touched" in out
    assert "scored      1 leads shown by the pipeline" in out  # so a re-run's check is right
    assert "events sent (100%)" in err
    await scored_as(system, ada)

    # CSV as a spreadsheet exports it: a column per trait and property, no event ids,
    # a mixed-case address (one lead with bob@example.com), a BOM
    columns = ["lead_id", "type", "occurred_at", "traits.industry", "traits.employees"]
    columns += ["traits.budget_usd", "traits.job_level", "properties.path", "properties"]
    sheet = io.StringIO()
    writer = csv.DictWriter(sheet, columns)
    writer.writeheader()
    for event in bob:
        properties = dict(event.get("properties", {}))
        row = {
            "lead_id": "Bob@Example.com",
            "type": event["type"],
            "occurred_at": event["occurred_at"],
            "properties.path": properties.pop("path", ""),
            "properties": orjson.dumps(properties).decode() if properties else "",
        }
        row.update({f"traits.{k}": v for k, v in event.get("traits", {}).items()})
        writer.writerow(row)
    path = tmp_path / "events.csv"
    path.write_text("\ufeff" + sheet.getvalue())

    assert await run_import(str(path), *urls(system)) == 0
    out = capsys.readouterr().out
    assert "invalid     0 rows" in out
    # without ids, the five identical pricing-view rows are one event (README)
    assert "duplicates  4 rows" in out
    assert "accepted    8" in out
    await scored_as(system, [*ada, *_distinct(bob)])

    # the same file again: the same ids, counted once; bob's history is now beyond the
    # horizon behind its own newest event, so it is refused, and says why
    assert await run_import(str(path), *urls(system)) == 1
    out = capsys.readouterr().out
    assert "if an earlier import of this file loaded it" in out
    await scored_as(system, [*ada, *_distinct(bob)])
    await no_dead_letters(system.settings)


def _distinct(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without ids, rows identical but for their id are one event: a spreadsheet row has
    no id to tell them apart."""
    seen: set[str] = set()
    kept = []
    for event in events:
        content = orjson.dumps(
            {k: v for k, v in event.items() if k != "event_id"}, option=orjson.OPT_SORT_KEYS
        ).decode()
        if content not in seen:
            seen.add(content)
            kept.append(event)
    return kept


async def test_history_beyond_the_horizon_of_a_live_lead_is_refused_not_dead_lettered(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = ev("cyd@example.com", 100, "email.clicked", 120)
    assert (await system.ingest.post("/v1/events", json=live)).status_code == 202
    await scored_as(system, [live])

    old = [
        ev("cyd@example.com", 1, "lead.updated", 10, traits=QUALIFIED),  # 110 days before
        ev("cyd@example.com", 2, "form.submitted", 100),  # within the horizon
    ]
    new = [ev("dan@example.com", 1, "lead.updated", 0, traits=QUALIFIED)]
    new.append(ev("dan@example.com", 2, "demo.requested", 90))
    # enough leads that reading the pipeline's listing is cheaper than a lookup each
    new += [ev(f"n{n}@example.com", 1, "email.opened", n) for n in range(19)]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(orjson.dumps(e).decode() + "\n" for e in [*old, *new]))

    assert await run_import(str(path), *urls(system), "--dry-run") == 1
    out = capsys.readouterr().out
    assert "would send  21" in out
    assert "lead cyd@example.com: refused, none of its 2 events sent: 1 are older than" in out
    assert (await system.pipeline.get("/v1/leads/dan@example.com")).status_code == 404

    assert await run_import(str(path), *urls(system), "--strict") == 1
    assert "stopped     21 events not sent: --strict" in capsys.readouterr().out

    assert await run_import(str(path), *urls(system)) == 1
    out = capsys.readouterr().out
    assert "refused     2 events of 1 leads" in out
    assert "accepted    21" in out
    await scored_as(system, [live, *new])  # cyd as it was: only its live event
    await no_dead_letters(system.settings)

    # what the refusal prevents: told a longer horizon than scoring's, the import sends
    # cyd's old history, and scoring dead-letters the event it can no longer de-duplicate
    cyd = tmp_path / "cyd.jsonl"
    cyd.write_text("".join(orjson.dumps(e).decode() + "\n" for e in old))
    assert await run_import(str(cyd), *urls(system), "--horizon-days", "1000") == 0
    capsys.readouterr()
    (letter,) = await read_records(
        system.settings, system.settings.topics.dead_letters, lambda records: len(records) >= 1
    )
    reason = orjson.loads(letter.value)["reason"]
    assert reason.startswith(f"too old: {old[0]['occurred_at']} is more than 30 days")
