"""Rescoring on the real broker: a dry run that changes nothing live, then the switch.

The new model (``strict-2``) raises the prospect threshold above the qualified leads'
fit, so every one of them must fall back to ``lead`` when it goes live: one stage change
each, naming the model, with sequences that go on without a gap; and every lead's final
score is the new model folded over all its events, including those posted while the
switch ran.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from aiokafka import TopicPartition

from services.scoring.app import create_app
from services.scoring.model import ScoringModel, load_model
from services.scoring.model_topic import read_publications
from services.scoring.rescore import RescoreRefused, dry_run, publish, wait_for_switch
from services.scoring.settings import ScoringSettings
from shared.events import Event, ScoreUpdate
from shared.kafka import make_admin, make_consumer
from shared.settings import LeadflowSettings
from shared.topic_admin import partitions_of
from tests.reference import change_sequence_problems, reference
from tests.scoring.test_worker import (
    QUALIFIED,
    make_event,
    produce,
    read_changes,
    read_scores,
    running_worker,
    scoring_settings,
)
from tests.servers import serving

pytestmark = pytest.mark.integration

LIVE = load_model()
ROOT = Path(__file__).resolve().parents[2]


def strict_model() -> ScoringModel:
    data = LIVE.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["version"] = "strict-2"
    data["stages"]["prospect"]["fit_min"] = 80
    return ScoringModel.model_validate(data)


def history(leads: int) -> list[Event]:
    """Qualified leads (prospects now) and unqualified ones (leads either way)."""
    events = []
    for n in range(leads):
        lead = f"rescore-{n}@example.com"
        traits = QUALIFIED if n % 2 == 0 else {"industry": "saas"}
        events.append(make_event(lead, "lead.updated", n, traits=traits))
        events.append(make_event(lead, "email.clicked", n + 1))
    return events


async def end_offsets(settings: LeadflowSettings, topics: Sequence[str]) -> dict[str, int]:
    tps = [TopicPartition(t, p) for t in topics for p in await partitions_of(settings, t)]
    consumer = make_consumer(settings, name="test-ends", group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {f"{tp.topic}[{tp.partition}]": offset for tp, offset in ends.items()}


async def committed(settings: ScoringSettings) -> dict[int, int]:
    admin = make_admin(settings, name="test-offsets")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.scoring_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def test_a_dry_run_reports_the_new_model_and_changes_nothing_live(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    events = history(10)
    await produce(settings, events)
    async with running_worker(settings):
        await read_scores(settings, len(events))
    topics = settings.topics
    outputs = [topics.scores, topics.stage_changes, topics.models, topics.scoring_state]
    before = (await end_offsets(settings, outputs), await committed(settings))

    report = await dry_run(settings, strict_model(), processes=2)

    assert (await end_offsets(settings, outputs), await committed(settings)) == before
    assert report["stages"]["now"]["prospect"] == 5
    assert report["stages"]["new"]["prospect"] == 0
    assert report["stages"]["new"]["lead"] == 10
    assert report["moves"]["matrix"] == {"prospect": {"lead": 5}}
    assert (report["moves"]["down"], report["moves"]["up"]) == (5, 0)
    assert report["replay"] == {"records": 20, "refused": 0, "seconds": report["replay"]["seconds"]}
    assert report["history"]["complete"] is True
    want = reference(events, strict_model())
    movers = {m["lead_id"]: m for m in report["top_movers"]}
    assert set(movers) == {f"rescore-{n}@example.com" for n in range(0, 10, 2)}
    for mover in movers.values():  # a threshold moved them, not a rule: no points change
        assert (mover["stage_now"], mover["stage_new"], mover["delta"]) == ("prospect", "lead", 0)
        assert mover["rules"] == []
    assert {lead: want[lead].score.stage for lead in want} == {
        f"rescore-{n}@example.com": "lead" for n in range(10)
    }


async def test_publishing_switches_every_lead_once_with_events_flowing(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    events = history(30)
    await produce(settings, events)
    async with running_worker(settings):
        await read_scores(settings, len(events))
        report = await dry_run(settings, strict_model(), processes=1)
        during = [make_event(f"rescore-{n}@example.com", "email.clicked", 90) for n in range(30)]
        offsets, _ = await asyncio.gather(
            publish(settings, strict_model(), LIVE, report), produce(settings, during)
        )
        await wait_for_switch(settings, offsets, timeout=120)
        after = [make_event(f"rescore-{n}@example.com", "email.opened", 120) for n in range(30)]
        await produce(settings, after)
        # each lead: its live updates, one from the switch, one per later event
        scores = await read_scores(settings, len(events) + 30 + len(during) + len(after))
        changes = await read_changes(settings, 30 + 15)

    expected = reference([*events, *during, *after], strict_model())
    finals: dict[str, ScoreUpdate] = {}
    for update in scores:
        finals[update.lead_id] = update
    for lead, want in expected.items():
        got = finals[lead]
        assert (got.stage, got.model_version) == (want.score.stage, "strict-2")
        assert got.total == pytest.approx(want.score.total, abs=1e-9)
        assert got.sequence == 5  # 2 live events, the switch, 1 during and 1 after: no gap
    assert [u.sequence for u in scores if u.lead_id == "rescore-0@example.com"] == [1, 2, 3, 4, 5]
    switched = [c for c in changes if c.trigger_event_id == "model-switch:strict-2"]
    assert sorted(c.lead_id for c in switched) == sorted(
        f"rescore-{n}@example.com" for n in range(0, 30, 2)
    )
    assert all(
        (c.from_stage, c.to_stage, c.reason.split(":")[0]) == ("prospect", "lead", "model strict-2")
        for c in switched
    )
    assert change_sequence_problems(changes) == []
    assert len({c.change_id for c in changes}) == len(changes)

    publications = await read_publications(settings)
    assert [(p.version, p.previous) for p in publications] == [
        ("default-1", None),
        ("strict-2", "default-1"),
    ]
    with pytest.raises(RescoreRefused, match="already live"):
        await publish(settings, strict_model(), LIVE, report)


async def test_the_model_routes_show_the_live_model_and_its_history(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = ScoringSettings(**kafka_settings.model_dump(), scoring_accounts=False)
    with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            rows = (await client.get("/v1/model/history")).json()["items"]
            assert [(r["version"], r["live_from"]) for r in rows] == [("default-1", None)]
            report = await dry_run(settings, strict_model(), processes=1)
            await publish(settings, strict_model(), LIVE, report)
            # the routes re-read the topic once their last read is a few seconds old
            deadline = asyncio.get_running_loop().time() + 30
            while (await client.get("/v1/model")).json()["version"] != "strict-2":
                assert asyncio.get_running_loop().time() < deadline, "never saw strict-2"
                await asyncio.sleep(0.2)
            live = (await client.get("/v1/model")).json()
            assert live["stages"]["prospect"]["fit_min"] == 80
            rows = (await client.get("/v1/model/history")).json()["items"]
    assert [(r["version"], r["previous"]) for r in rows] == [
        ("default-1", None),
        ("strict-2", "default-1"),
    ]
    assert rows[0]["live_until"] == rows[1]["live_from"] is not None
    assert rows[1]["live_until"] is None


def test_the_command_prints_the_report_and_writes_it_as_json(
    kafka_settings: LeadflowSettings, tmp_path: Path
) -> None:
    model_file = tmp_path / "strict.yaml"
    document = strict_model().model_dump(mode="json", by_alias=True, exclude_none=True)
    model_file.write_text(yaml.safe_dump(document))
    report_file = tmp_path / "report.json"
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "LEADFLOW_TOPIC_NAMESPACE": kafka_settings.topic_namespace,
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "rescore", "--model", str(model_file),
         "--report", str(report_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Rescoring under model strict-2" in done.stdout
    assert "dry run: nothing changed" in done.stdout
    report = orjson.loads(report_file.read_bytes())
    assert report["models"]["new"] == "strict-2"
    assert report["leads"] == {"now": 0, "new": 0, "compared": 0, "only_now": 0, "only_new": 0}

    bad = model_file.with_name("bad.yaml")
    bad.write_text("version: x\n")
    refused = subprocess.run(
        [sys.executable, "-m", "shared.cli", "rescore", "--model", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("leadflow rescore: ")
    assert str(bad) in refused.stderr
