"""The scoring worker on the real broker: right scores out, every event counted once.

The reference is the pure domain folded over each lead's events: whatever
happens to the workers (restarts, rebalances, poison records), the committed
outputs must equal it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.bindings.kafka import KafkaMessage
from cloudevents.core.formats.json import JSONFormat

from services.scoring.lead import LeadState
from services.scoring.model import load_model
from services.scoring.scoring import apply_event
from services.scoring.settings import ScoringSettings
from services.scoring.worker import ScoringWorker
from shared.events import ERASE_ID_HEADER, LEAD_ERASED, Event, ScoreUpdate, StageChange
from shared.kafka import encode_key, make_producer
from shared.settings import LeadflowSettings
from tests.topics import read_records

pytestmark = pytest.mark.integration

MODEL = load_model()
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


def scoring_settings(base: LeadflowSettings) -> ScoringSettings:
    return ScoringSettings(**base.model_dump(), scoring_batch_records=200)


@asynccontextmanager
async def running_worker(settings: ScoringSettings) -> AsyncIterator[ScoringWorker]:
    worker = ScoringWorker(settings, MODEL)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 30)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def make_event(lead: str, kind: str, minutes: float, **fields: Any) -> Event:
    return Event(
        event_id=f"{lead}/{uuid.uuid4().hex[:8]}",
        type=kind,
        lead_id=lead,
        occurred_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


async def produce(settings: LeadflowSettings, events: Sequence[Event]) -> None:
    producer = make_producer(settings, name="test-feed")
    await producer.start()
    try:
        sends = [
            await producer.send(settings.topics.events, e.to_json(), key=encode_key(e.lead_id))
            for e in events
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def reference(events: Sequence[Event]) -> dict[str, tuple[ScoreUpdate, list[StageChange]]]:
    """The last score and the stage changes the pure model gives, per lead, in posting order."""
    states: dict[str, LeadState | None] = defaultdict(lambda: None)
    last: dict[str, ScoreUpdate] = {}
    changes: dict[str, list[StageChange]] = defaultdict(list)
    for event in events:
        outcome = apply_event(states[event.lead_id], event, MODEL)
        if outcome.skipped is None:
            states[event.lead_id] = outcome.state
            if outcome.score_update is not None:
                last[event.lead_id] = outcome.score_update
            if outcome.stage_change is not None:
                changes[event.lead_id].append(outcome.stage_change)
    return {lead: (update, changes[lead]) for lead, update in last.items()}


async def read_scores(settings: LeadflowSettings, expected: int) -> list[ScoreUpdate]:
    records = await read_records(
        settings, settings.topics.scores, lambda r: len(r) >= expected, timeout=90
    )
    return [ScoreUpdate.model_validate_json(r.value) for r in records]


async def read_changes(settings: LeadflowSettings, expected: int) -> list[StageChange]:
    records = await read_records(
        settings, settings.topics.stage_changes, lambda r: len(r) >= expected, timeout=90
    )
    return [StageChange.model_validate_json(r.value) for r in records]


def assert_exactly_once(
    events: Sequence[Event], scores: Sequence[ScoreUpdate], changes: Sequence[StageChange]
) -> None:
    """Each event scored once; per lead, the outputs equal the reference, sequences gapless."""
    expected = reference(events)
    by_lead: dict[str, list[ScoreUpdate]] = defaultdict(list)
    for update in scores:
        by_lead[update.lead_id].append(update)
    assert sorted(u.trigger_event_id for u in scores) == sorted(e.event_id for e in events)
    for lead, (want, lead_changes) in expected.items():
        updates = by_lead[lead]
        assert [u.sequence for u in updates] == list(range(1, len(updates) + 1))
        final = updates[-1]
        assert (final.fit, final.stage, final.sequence) == (want.fit, want.stage, want.sequence)
        assert final.engagement == pytest.approx(want.engagement, abs=1e-9)
        emitted = [c for c in changes if c.lead_id == lead]
        assert [c.sequence for c in emitted] == list(range(1, len(emitted) + 1))
        assert [(c.change_id, c.to_stage) for c in emitted] == [
            (c.change_id, c.to_stage) for c in lead_changes
        ]


async def test_events_in_give_the_default_models_scores_and_stages(
    kafka_settings: LeadflowSettings,
) -> None:
    lead = "ada@example.com"
    events = [
        make_event(lead, "lead.updated", 0, traits=QUALIFIED),
        make_event(lead, "form.submitted", 1),
        make_event(lead, "webinar.attended", 1),
        *(make_event(lead, "page.viewed", 1, properties={"path": "/pricing"}) for _ in range(4)),
    ]
    settings = scoring_settings(kafka_settings)
    await produce(settings, events)
    async with running_worker(settings):
        scores = await read_scores(settings, len(events))
        changes = await read_changes(settings, 2)

    final = scores[-1]
    assert (final.fit, final.engagement, final.total) == (75, 40, 115)
    assert final.stage == "opportunity"
    assert [(c.from_stage, c.to_stage) for c in changes][-1] == ("prospect", "opportunity")
    assert changes[-1].trigger_event_id == events[-2].event_id  # the 3rd pricing view
    assert_exactly_once(events, scores, changes)


async def test_a_new_worker_restores_state_from_the_changelog(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    leads = [f"restore-{i}@example.com" for i in range(20)]
    first = [make_event(lead, "lead.updated", 0, traits=QUALIFIED) for lead in leads]
    first += [make_event(lead, "email.clicked", 5) for lead in leads]
    second = [make_event(lead, "demo.requested", 60) for lead in leads]

    await produce(settings, first)
    async with running_worker(settings):
        await read_scores(settings, len(first))
    await produce(settings, second)
    async with running_worker(settings):
        scores = await read_scores(settings, len(first) + len(second))
        changes = await read_changes(settings, 2 * len(leads))

    assert_exactly_once(first + second, scores, changes)
    finals = {u.lead_id: u for u in scores}
    assert all(u.stage == "opportunity" and u.sequence == 3 for u in finals.values())


async def test_an_erased_lead_stays_erased_after_a_restart_and_its_id_starts_anew(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    topics, ada, bob = settings.topics, "ada@example.com", "bob@example.com"
    first = make_event(ada, "lead.updated", 0, traits=QUALIFIED)
    erase = make_event(ada, LEAD_ERASED, 1)
    await produce(settings, [first, make_event(ada, "email.clicked", 1)])
    async with running_worker(settings):
        await read_records(settings, topics.scores, lambda r: len(r) >= 2, timeout=90)
        await produce(settings, [erase])
        scores = await read_records(settings, topics.scores, lambda r: len(r) >= 3, timeout=90)
        changes = await read_records(
            settings, topics.stage_changes, lambda r: len(r) >= 2, timeout=90
        )
    for signals in (scores, changes):
        tombstone = signals[-1]
        assert (tombstone.key, tombstone.value) == (ada.encode(), None)
        assert dict(tombstone.headers)[ERASE_ID_HEADER] == erase.event_id.encode()

    # restored from the changelog, the lead is not there: the same event id is news again
    await produce(settings, [first, make_event(bob, "lead.updated", 2)])
    async with running_worker(settings):
        records = await read_records(settings, topics.scores, lambda r: len(r) >= 5, timeout=90)
    reborn = [
        ScoreUpdate.model_validate_json(r.value)
        for r in records[3:]
        if r.key == ada.encode() and r.value is not None
    ]
    assert [(u.sequence, u.fit, u.trigger_event_id) for u in reborn] == [(1, 75, first.event_id)]
    new_changes = await read_records(
        settings, topics.stage_changes, lambda r: len(r) >= 4, timeout=90
    )
    restarted = [StageChange.model_validate_json(r.value) for r in new_changes[2:]]
    assert sorted((c.lead_id, c.sequence, c.from_stage) for c in restarted) == [
        (ada, 1, None),
        (bob, 1, None),
    ]


async def test_a_rebalance_mid_stream_counts_every_event_once(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    leads = [f"rebalance-{i}@example.com" for i in range(60)]
    kinds = ["page.viewed", "email.opened", "email.clicked", "form.submitted"]
    events = [make_event(lead, "lead.updated", 0, traits=QUALIFIED) for lead in leads]
    events += [
        make_event(leads[i % len(leads)], kinds[i % len(kinds)], 1 + i / 10) for i in range(3000)
    ]

    async with running_worker(settings):
        await produce(settings, events[:1500])
        await read_scores(settings, 300)  # the first worker is under way
        async with running_worker(settings) as second:
            await produce(settings, events[1500:])
            scores = await read_scores(settings, len(events))
            assert second.partitions  # the group did give it partitions
    changes = await read_changes(settings, len(leads))
    assert_exactly_once(events, scores, changes)


async def test_a_poison_record_goes_to_dead_letters_and_the_next_is_scored(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    lead = "poison@example.com"
    good = make_event(lead, "email.clicked", 0)
    producer = make_producer(settings, name="test-poison")
    await producer.start()
    try:
        key = encode_key(lead)
        await producer.send_and_wait(settings.topics.events, b"{not json", key=key)
        wrong = orjson.dumps({**orjson.loads(good.to_json()), "occurred_at": 12})
        await producer.send_and_wait(settings.topics.events, wrong, key=key)
        await producer.send_and_wait(settings.topics.events, b"x" * 900_000, key=key)
        await producer.send_and_wait(settings.topics.events, good.to_json(), key=key)
    finally:
        await producer.stop()

    async with running_worker(settings):
        scores = await read_scores(settings, 1)
        letters = await read_records(settings, settings.topics.dead_letters, lambda r: len(r) >= 3)

    assert [u.trigger_event_id for u in scores] == [good.event_id]
    reasons = [orjson.loads(r.value) for r in letters]
    assert [r["source"]["offset"] for r in reasons] == [0, 1, 2]
    assert "json" in reasons[0]["reason"].lower()
    assert "occurred_at" in reasons[1]["reason"]
    assert reasons[2]["value_truncated"] is True
    assert reasons[2]["value_bytes"] == 900_000


async def test_an_event_too_old_to_deduplicate_is_a_dead_letter_not_a_silent_drop(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    lead = "late@example.com"
    recent = make_event(lead, "email.clicked", 0)
    late = make_event(lead, "email.clicked", -60 * 24 * 40)  # 40 days before: past the horizon
    after = make_event(lead, "email.opened", 1)
    await produce(settings, [recent, late, after])

    async with running_worker(settings):
        scores = await read_scores(settings, 2)
        letters = await read_records(settings, settings.topics.dead_letters, lambda r: len(r) >= 1)

    assert [u.trigger_event_id for u in scores] == [recent.event_id, after.event_id]
    letter = orjson.loads(letters[0].value)
    assert letter["reason"].startswith("too old")
    assert orjson.loads(letter["value"])["event_id"] == late.event_id


async def test_outputs_are_binary_mode_cloudevents_to_the_cloudevents_sdk(
    kafka_settings: LeadflowSettings,
) -> None:
    """The ``ce_*`` headers of the Kafka binding on every score and stage change, read by
    the CNCF SDK itself: its event's data is the record's value, its id the record's own."""
    lead = "ce-reader@example.com"
    events = [make_event(lead, "lead.updated", 0, traits=QUALIFIED)]
    settings = scoring_settings(kafka_settings)
    await produce(settings, events)
    async with running_worker(settings):
        [score] = await read_records(settings, settings.topics.scores, lambda r: len(r) >= 1)
        [change] = await read_records(settings, settings.topics.stage_changes, bool)

    def as_cloudevent(record: Any) -> Any:
        message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        return kafka_binding.from_binary(message, JSONFormat())

    update = ScoreUpdate.model_validate_json(score.value)
    read = as_cloudevent(score)
    assert read.get_type() == "leadflow.score.updated"
    assert read.get_id() == f"{lead}/1"
    assert read.get_subject() == lead
    assert read.get_time() == update.as_of
    assert read.get_data() == orjson.loads(score.value)
    moved = StageChange.model_validate_json(change.value)
    read = as_cloudevent(change)
    assert (read.get_type(), read.get_id()) == ("leadflow.stage.changed", moved.change_id)
    assert read.get_source() == "leadflow/scoring"
    assert read.get_data()["to_stage"] == moved.to_stage == "prospect"
