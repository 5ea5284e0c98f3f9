"""Identity merges on the real broker: an anonymous visitor on another partition than the
known lead, merged, with a worker restart between the merge and the visitor's next event."""

from __future__ import annotations

import pytest

from services.scoring.identity import MERGE_HORIZON
from services.scoring.lead import LeadState
from services.scoring.scoring import apply_event
from shared.events import IDENTITY_MERGE, Event, ScoreUpdate, StageChange
from shared.kafka import PARTITIONER, encode_key
from shared.settings import LeadflowSettings
from shared.topic_admin import partitions_of
from tests.scoring.test_worker import (
    MODEL,
    QUALIFIED,
    make_event,
    produce,
    running_worker,
    scoring_settings,
)
from tests.topics import read_records

pytestmark = pytest.mark.integration

KNOWN = "ada@example.com"


async def anonymous_id_elsewhere(settings: LeadflowSettings) -> str:
    """An ``anon:`` id whose partition is not the known lead's."""
    partitions = await partitions_of(settings, settings.topics.events)
    known = PARTITIONER(encode_key(KNOWN), partitions, None)
    for n in range(100):
        candidate = f"anon:visitor-{n}"
        if PARTITIONER(encode_key(candidate), partitions, None) != known:
            return candidate
    raise AssertionError("every id hashed to one partition")


def fold(state: LeadState | None, event: Event, *, carried: bool = False) -> LeadState | None:
    """The reference: a carried event (the merge's) is never too old."""
    outcome = apply_event(state, event, MODEL, MERGE_HORIZON) if carried else None
    outcome = outcome or apply_event(state, event, MODEL)
    return state if outcome.skipped is not None else outcome.state


async def test_a_visitor_merged_across_partitions_scores_as_the_reference(
    kafka_settings: LeadflowSettings,
) -> None:
    settings = scoring_settings(kafka_settings)
    anonymous = await anonymous_id_elsewhere(settings)
    views = [
        make_event(anonymous, "page.viewed", m, properties={"path": "/pricing"}) for m in (0, 5)
    ]
    signup = make_event(KNOWN, "lead.updated", 60, traits=QUALIFIED)
    request = make_event(anonymous, IDENTITY_MERGE, 61, properties={"into": KNOWN})
    later = make_event(anonymous, "email.clicked", 90)
    async with running_worker(settings):
        await produce(settings, [*views, signup, request])
        await read_records(
            settings,
            settings.topics.scores,
            lambda rs: any(ScoreUpdate.model_validate_json(r.value).merged_from for r in rs),
            timeout=90,
        )
    async with running_worker(settings):  # restored: the alias holds
        await produce(settings, [later])
        records = await read_records(
            settings,
            settings.topics.scores,
            lambda rs: any(later.event_id.encode() in r.value for r in rs),
            timeout=90,
        )
    changes = [
        StageChange.model_validate_json(r.value)
        for r in await read_records(
            settings, settings.topics.stage_changes, lambda rs: len(rs) >= 2, timeout=90
        )
    ]
    scores = [ScoreUpdate.model_validate_json(r.value) for r in records]
    known = [s for s in scores if s.lead_id == KNOWN]
    assert [s.sequence for s in known] == [1, 2, 3]
    assert known[1].merged_from == anonymous
    assert known[1].trigger_event_id == request.event_id
    assert known[2].trigger_event_id == later.event_id

    state: LeadState | None = fold(None, signup)
    for view in views:
        state = fold(state, view.model_copy(update={"lead_id": KNOWN}), carried=True)
    state = fold(state, later.model_copy(update={"lead_id": KNOWN}))
    assert state is not None
    assert state.as_of is not None
    assert known[2].stage == state.stage
    assert known[2].engagement == pytest.approx(
        state.engagement.value_at(state.as_of.timestamp(), MODEL.rulebook.half_life)
    )
    known_changes = [c for c in changes if c.lead_id == KNOWN]
    assert [c.sequence for c in known_changes] == list(range(1, len(known_changes) + 1))
    assert not [s for s in scores if s.lead_id == anonymous and s.sequence > len(views)]
