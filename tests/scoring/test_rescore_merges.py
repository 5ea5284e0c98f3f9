"""``leadflow rescore`` over a topic holding identity merges, on the real broker.

Visitors merged into known leads on other partitions (docs/architecture.md §5.12), one
visitor never identified. The new model (``merges-2``) pays more for pricing views and
clicks, so every lead moves. The dry run and ``--publish``, run as the command, must give
each merged lead what the new model gives both ids' events (the merge folded as one step),
count no merged visitor as a lead, now or new, and leave the visitor merged once live.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from services.scoring.model import ScoringModel, load_model
from services.scoring.settings import ScoringSettings
from shared.events import IDENTITY_MERGE, Event, ScoreUpdate, StageChange
from shared.kafka import PARTITIONER, encode_key
from shared.settings import LeadflowSettings
from shared.topic_admin import partitions_of
from tests.merge_reference import MergedExpected, MergeStep, fold_partition
from tests.reference import change_sequence_problems, reference
from tests.scoring.test_worker import (
    QUALIFIED,
    make_event,
    produce,
    running_worker,
    scoring_settings,
)
from tests.topics import read_records, read_to_end

pytestmark = pytest.mark.integration

LIVE = load_model()
ROOT = Path(__file__).resolve().parents[2]
PAIRS = 6


def new_model() -> ScoringModel:
    data = LIVE.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["version"] = "merges-2"
    for rule in data["engagement"]["rules"]:
        if rule["id"] in ("pricing-view", "email-click"):
            rule["points"] *= 2
    return ScoringModel.model_validate(data)


@dataclass
class Pair:
    known: str
    visitor: str
    before: list[Event]
    own: list[Event]
    merge: Event
    later: list[Event]
    """The visitor's events after its merge (forwarded), then the known lead's."""


async def make_pairs(settings: LeadflowSettings) -> list[Pair]:
    partitions = await partitions_of(settings, settings.topics.events)

    def where(lead_id: str) -> int:
        return int(PARTITIONER(encode_key(lead_id), partitions, None))

    pairs = []
    for n in range(PAIRS):
        known = f"merged-{n}@example.com"
        visitor = next(
            f"anon:rescore-{n}-{k}"
            for k in range(100)
            if where(f"anon:rescore-{n}-{k}") != where(known)
        )
        pricing = {"path": "/pricing"}
        before = [
            make_event(visitor, "page.viewed", m, properties=pricing) for m in (0, 1, 2, 3)
        ]  # one over the daily cap
        before.append(make_event(visitor, "demo.requested" if n % 2 else "email.clicked", 4))
        traits = QUALIFIED if n % 3 else {"industry": "saas"}
        own = [
            make_event(known, "lead.updated", 10, traits=traits),
            make_event(known, "email.clicked", 11),
        ]
        merge = make_event(visitor, IDENTITY_MERGE, 20, properties={"into": known})
        later = [
            make_event(visitor, "page.viewed", 30, properties=pricing),
            make_event(known, "email.clicked", 31),
        ]
        pairs.append(Pair(known, visitor, before, own, merge, later))
    return pairs


def expected_of(pair: Pair, model: ScoringModel) -> MergedExpected:
    steps: list[Event | MergeStep] = [
        *pair.own,
        MergeStep(pair.merge.event_id, pair.before),
        *pair.later,
    ]
    return fold_partition(pair.known, steps, model)


async def scored_through(settings: LeadflowSettings, wanted: set[str]) -> None:
    """Until a score update triggered by each of ``wanted`` is on the scores topic."""

    def seen(records: Sequence[Any]) -> bool:
        triggers = {orjson.loads(r.value)["trigger_event_id"] for r in records if r.value}
        return wanted <= triggers

    await read_records(settings, settings.topics.scores, seen, timeout=90)


async def rescore(settings: ScoringSettings, tmp_path: Path, *flags: str) -> dict[str, Any]:
    """``leadflow rescore`` as a process (the worker keeps running in this event loop)."""
    model_file = tmp_path / "merges-2.yaml"
    document = new_model().model_dump(mode="json", by_alias=True, exclude_none=True)
    model_file.write_text(yaml.safe_dump(document))
    report_file = tmp_path / f"report{len(flags)}.json"
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LEADFLOW_TOPIC_NAMESPACE": settings.topic_namespace,
        "LEADFLOW_SCORING_GROUP": settings.scoring_group,
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "rescore", "--model", str(model_file),
        "--report", str(report_file), "--processes", "1", *flags,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(command.communicate(), 120)
    assert command.returncode == 0, err.decode()
    return dict(orjson.loads(report_file.read_bytes()), stdout=out.decode())


async def test_rescoring_merged_leads_folds_both_ids_under_the_new_model(
    kafka_settings: LeadflowSettings, tmp_path: Path
) -> None:
    settings = scoring_settings(kafka_settings)
    pairs = await make_pairs(settings)
    stranger = [
        make_event("anon:never-identified", "page.viewed", m, properties={"path": "/pricing"})
        for m in (0, 1)
    ]
    new = new_model()
    async with running_worker(settings):
        # each step waits for the one before, so the known partitions hold them in order
        await produce(settings, [*stranger, *(e for p in pairs for e in (*p.before, *p.own))])
        await scored_through(settings, {p.own[-1].event_id for p in pairs})
        await produce(settings, [p.merge for p in pairs])
        await scored_through(settings, {p.merge.event_id for p in pairs})
        for step in (0, 1):
            await produce(settings, [p.later[step] for p in pairs])
            await scored_through(settings, {p.later[step].event_id for p in pairs})

        dry = await rescore(settings, tmp_path)
        assert "dry run: nothing changed" in dry["stdout"]
        leads = PAIRS + 1  # the known leads and the visitor never identified
        assert dry["leads"] == {
            "now": leads, "new": leads, "compared": leads, "only_now": 0, "only_new": 0
        }  # fmt: skip
        assert sum(dry["stages"]["now"].values()) == sum(dry["stages"]["new"].values()) == leads
        movers = {m["lead_id"]: m for m in dry["top_movers"]}
        assert set(movers) == {p.known for p in pairs} | {"anon:never-identified"}
        for pair in pairs:
            live, replayed = expected_of(pair, LIVE), expected_of(pair, new)
            assert live.last is not None
            assert replayed.last is not None
            mover = movers[pair.known]
            assert mover["total_now"] == pytest.approx(live.last.total, abs=1e-9)
            assert mover["total_new"] == pytest.approx(replayed.last.total, abs=1e-9)
            assert mover["stage_new"] == replayed.last.stage
        stranger_new = reference(stranger, new)["anon:never-identified"].score
        assert movers["anon:never-identified"]["total_new"] == pytest.approx(stranger_new.total)

        published = await rescore(settings, tmp_path, "--publish")
        assert "merges-2 is live" in published["stdout"]
        after = [make_event(p.visitor, "email.clicked", 40) for p in pairs]  # still forwarded
        await produce(settings, after)
        await scored_through(settings, {e.event_id for e in after})
        scores = [
            ScoreUpdate.model_validate_json(r.value)
            for r in await read_to_end(settings, settings.topics.scores)
        ]
        changes = [
            StageChange.model_validate_json(r.value)
            for r in await read_to_end(settings, settings.topics.stage_changes)
        ]

    finals: dict[str, ScoreUpdate] = {}
    for update in scores:
        if update.lead_id not in finals or update.sequence > finals[update.lead_id].sequence:
            finals[update.lead_id] = update
    for pair, extra in zip(pairs, after, strict=True):
        live = expected_of(pair, LIVE)
        want = fold_partition(
            pair.known,
            [*pair.own, MergeStep(pair.merge.event_id, pair.before), *pair.later, extra],
            new,
        )
        assert want.last is not None
        got = finals[pair.known]
        assert (got.model_version, got.trigger_event_id) == ("merges-2", extra.event_id)
        assert got.total == pytest.approx(want.last.total, abs=1e-9)
        assert got.stage == want.last.stage
        assert got.sequence == len(live.triggers) + 2  # the switch, then the forwarded click
        assert finals[pair.visitor].model_version == LIVE.version  # no lead since its merge
    assert change_sequence_problems(changes) == []
