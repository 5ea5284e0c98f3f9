"""Identity merges without a broker: the routing decisions of the batch code, and the merge
arithmetic (a merged lead is the reference folded over both ids' events)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.batch import BatchResult, Refusal, score_batch
from services.scoring.changelog import PartitionState, apply_record
from services.scoring.identity import (
    MAX_HISTORY_BYTES,
    MERGE_HORIZON,
    Follow,
    Merge,
    alias_key,
    alias_record,
    fold_merge,
)
from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel
from services.scoring.scoring import apply_event
from services.scoring.state_records import lead_record, read_lead
from shared.events import IDENTITY_MERGE, LEAD_ERASED, Event
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent, event_streams

ANON = "anon:v-1"
KNOWN = "ada@example.com"


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = None
    topic: str = "t.events"
    partition: int = 0


class Partition:
    """One partition's records and state, scored batch by batch like the worker."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.leads: dict[str, LeadState] = {}
        self.aliases: dict[str, str] = {}
        self.scored = -1

    def append(self, value: bytes) -> None:
        self.records.append(Record(len(self.records), value))

    def score(self, model: ScoringModel) -> BatchResult:
        pending = [r for r in self.records if r.offset > self.scored]
        result = score_batch(
            pending, self.leads, model, applied_offset=self.scored, aliases=self.aliases
        )
        self.scored = result.applied_offset
        return result


def route(result: BatchResult, to: Partition) -> None:
    """What the worker sends in the batch's transaction, delivered to ``to``."""
    for out in result.outgoing:
        to.append(out.event.to_json() if isinstance(out, Follow) else out.to_json())


def merge_request(make_event: MakeEvent, into: str = KNOWN, **kwargs: object) -> Event:
    return make_event(IDENTITY_MERGE, lead_id=ANON, into=into, **kwargs)


def reference_fold(
    model: ScoringModel,
    known: Sequence[Event],
    anonymous: Sequence[Event],
    later: Sequence[Event],
    after: Sequence[Event] = (),
) -> LeadState | None:
    """The merged identity: the known lead's events, then the anonymous lead's applied
    events as the known lead's (never too old; the known lead's traits win), then what
    followed, each folded with the one apply_event."""
    state: LeadState | None = None
    for event in known:
        state = _apply(state, event, model)
    anon_state: LeadState | None = None
    applied = []
    for event in anonymous:
        outcome = apply_event(anon_state, event, model)
        if outcome.skipped is None:
            anon_state = outcome.state
            applied.append(event)
    owned = set() if state is None else set(state.traits)
    for event in applied:
        traits = {n: v for n, v in event.traits.items() if n not in owned}
        moved = event.model_copy(update={"lead_id": KNOWN, "traits": traits})
        state = _apply(state, moved, model, MERGE_HORIZON)
    for event in [*later, *after]:
        state = _apply(state, event.model_copy(update={"lead_id": KNOWN}), model)
    return state


def _apply(
    state: LeadState | None,
    event: Event,
    model: ScoringModel,
    horizon: timedelta = timedelta(days=30),
) -> LeadState | None:
    outcome = apply_event(state, event, model, horizon)
    return state if outcome.skipped is not None else outcome.state


def test_a_merge_across_partitions_is_the_reference_over_both_ids(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    anonymous, known = Partition(), Partition()
    views = [
        make_event("page.viewed", lead_id=ANON, at=T0 + timedelta(hours=h), path="/pricing")
        for h in (0, 1, 2, 3, 30)
    ]
    views.append(make_event("demo.requested", lead_id=ANON, at=T0 + timedelta(hours=31)))
    signup = make_event("lead.updated", lead_id=KNOWN, at=T0 + timedelta(days=2), traits=ICP_TRAITS)
    for event in views:
        anonymous.append(event.to_json())
    known.append(signup.to_json())
    assert known.score(model).scored[0].stage_change is not None  # -> prospect on fit
    request = merge_request(make_event, at=T0 + timedelta(days=2, minutes=1))
    later = make_event("page.viewed", lead_id=ANON, at=T0 + timedelta(days=3), path="/pricing")
    anonymous.append(request.to_json())
    anonymous.append(later.to_json())
    result = anonymous.score(model)
    assert ANON not in anonymous.leads  # retired
    assert anonymous.aliases == {ANON: KNOWN}
    assert [e.lead_id for e in result.retired] == [ANON]
    assert result.aliases == {ANON: (KNOWN, request.event_id)}
    assert [type(o).__name__ for o in result.outgoing] == ["Merge", "Follow"]
    route(result, known)
    merged = known.score(model)

    expected = reference_fold(model, [signup], views, [later])
    assert expected is not None
    state = known.leads[KNOWN]
    assert state.engagement == expected.engagement
    assert state.traits == expected.traits
    assert state.stage == expected.stage == "opportunity"
    assert state.caps == expected.caps
    # the merge: one score update, one stage change; the forwarded view: one update
    assert [s.score.sequence for s in merged.scored] == [2, 3]
    assert merged.scored[0].score.merged_from == ANON
    assert merged.scored[0].score.trigger_event_id == request.event_id
    change = merged.scored[0].stage_change
    assert change is not None
    assert (change.from_stage, change.to_stage, change.sequence) == ("prospect", "opportunity", 2)
    assert change.reason.startswith(f"identity merge of {ANON}: ")
    assert merged.scored[1].stage_change is None


def test_a_merge_record_met_again_counts_once(model: ScoringModel, make_event: MakeEvent) -> None:
    view = make_event("page.viewed", lead_id=ANON, path="/pricing")
    merge = Merge("m-1", KNOWN, ANON, T0, events=(view.to_json(),))
    first = fold_merge(None, merge, model)
    assert first.state is not None
    assert first.score is not None
    assert first.stage_change is not None
    assert first.stage_change.from_stage is None  # a lead first known through its merge
    again = fold_merge(first.state, merge, model)
    assert again.duplicate
    assert again.score is None
    assert first.state.engagement.rules["pricing-view"].count == 1


def test_the_known_leads_traits_win_on_conflict(model: ScoringModel, make_event: MakeEvent) -> None:
    known = apply_event(
        None, make_event("lead.updated", traits={"industry": "retail"}, at=T0), model
    ).state
    newer = make_event("lead.updated", lead_id=ANON, at=T0 + timedelta(hours=1), traits=ICP_TRAITS)
    merged = fold_merge(known, Merge("m-1", KNOWN, ANON, T0, events=(newer.to_json(),)), model)
    assert merged.state is not None
    values = merged.state.trait_values()
    assert values["industry"] == "retail"  # the known lead's, though older
    assert values["employees"] == 200  # what the known lead did not have


def test_a_merge_carrying_nothing_into_an_unknown_lead_changes_nothing(
    model: ScoringModel,
) -> None:
    outcome = fold_merge(None, Merge("m-1", KNOWN, ANON, T0), model)
    assert outcome.state is None
    assert outcome.score is None


def test_a_merge_carrying_nothing_new_sends_no_update(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    opened = make_event("email.opened")
    known = apply_event(None, opened, model).state
    retried = opened.model_copy(update={"lead_id": ANON})  # the same event, seen by both ids
    for merge in (
        Merge("m-1", KNOWN, ANON, T0),
        Merge("m-2", KNOWN, ANON, T0, (retried.to_json(),)),
    ):
        outcome = fold_merge(known, merge, model)
        assert outcome.score is None
        assert outcome.stage_change is None
    assert known.score_sequence == 1


def test_identified_again_is_one_merge_and_another_lead_is_refused(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    anonymous = Partition()
    anonymous.append(make_event("page.viewed", lead_id=ANON, path="/blog").to_json())
    anonymous.append(merge_request(make_event).to_json())
    anonymous.append(merge_request(make_event).to_json())  # the next identify call
    anonymous.append(merge_request(make_event, into="bob@example.com").to_json())
    result = anonymous.score(model)
    assert len([o for o in result.outgoing if isinstance(o, Merge)]) == 1
    assert result.duplicates == 1
    assert [r.refusal for r in result.refused] == [Refusal.INAPPLICABLE]
    assert "merged into 'ada@example.com' already" in result.refused[0].reason


def test_a_merge_request_for_a_visitor_not_seen_yet_still_sets_the_alias(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    anonymous = Partition()
    anonymous.append(merge_request(make_event).to_json())
    anonymous.append(make_event("email.clicked", lead_id=ANON).to_json())
    result = anonymous.score(model)
    merge, follow = result.outgoing
    assert isinstance(merge, Merge)
    assert merge.events == ()
    assert isinstance(follow, Follow)
    assert follow.event.lead_id == KNOWN
    assert anonymous.leads == {}


def test_erasing_a_merged_id_drops_its_alias(model: ScoringModel, make_event: MakeEvent) -> None:
    anonymous = Partition()
    anonymous.append(make_event("page.viewed", lead_id=ANON).to_json())
    anonymous.append(merge_request(make_event).to_json())
    anonymous.append(make_event(LEAD_ERASED, lead_id=ANON).to_json())
    anonymous.append(make_event("page.viewed", lead_id=ANON).to_json())
    result = anonymous.score(model)
    assert result.unaliased == [ANON]
    assert result.aliases == {}
    assert anonymous.aliases == {}
    assert ANON in anonymous.leads  # a new visitor under the erased id


def test_a_merge_request_must_name_a_known_lead(make_event: MakeEvent) -> None:
    for lead_id, into in [(KNOWN, "bob@example.com"), (ANON, "anon:v-2"), (ANON, ANON)]:
        with pytest.raises(ValueError, match=r"identity\.merge"):
            make_event(IDENTITY_MERGE, lead_id=lead_id, into=into)


def test_an_anonymous_leads_history_survives_the_changelog_and_is_bounded(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    anonymous = Partition()
    big = "x" * 30_000
    for minute in range(25):
        at = T0 + timedelta(minutes=minute)
        anonymous.append(make_event("page.viewed", lead_id=ANON, at=at, title=big).to_json())
    anonymous.score(model)
    state = anonymous.leads[ANON]
    assert state.history is not None
    assert sum(len(raw) for raw in state.history) <= MAX_HISTORY_BYTES
    assert state.history_lost == 25 - len(state.history) > 0
    restored = read_lead(orjson.loads(lead_record(state)))
    assert [orjson.loads(r) for r in restored.history or []] == [
        orjson.loads(r) for r in state.history
    ]
    assert restored.history_lost == state.history_lost
    known = apply_event(None, make_event("email.opened"), model).state
    assert read_lead(orjson.loads(lead_record(known))).history is None


def test_alias_markers_restore_and_a_tombstone_ends_them() -> None:
    state = PartitionState()
    apply_record(state, alias_key(ANON), alias_record(KNOWN, "m-1"))
    assert state.aliases == {ANON: KNOWN}
    apply_record(state, alias_key(ANON), None)
    assert state.aliases == {}


@settings(max_examples=60, deadline=None)
@given(
    known_events=event_streams(max_size=12),
    anonymous_events=event_streams(max_size=12),
    later_events=event_streams(max_size=4),
    split=st.integers(0, 12),
)
def test_any_merge_is_the_reference_folded_over_both_ids(
    model: ScoringModel,
    known_events: list[Event],
    anonymous_events: list[Event],
    later_events: list[Event],
    split: int,
) -> None:
    """Whatever both ids did, in whatever order: the merged lead's state (engagement to
    the bit, caps, traits, stage, intent) is the reference's, its stage changes are
    gapless, and the merge brought at most one of them."""
    anonymous_events = [_as(e, ANON, "a") for e in anonymous_events]
    later_events = [_as(e, ANON, "l") for e in later_events]
    before, after = known_events[:split], known_events[split:]
    anonymous, known = Partition(), Partition()
    for event in before:
        known.append(event.to_json())
    for event in anonymous_events:
        anonymous.append(event.to_json())
    request = Event(
        event_id="merge-1",
        type=IDENTITY_MERGE,
        lead_id=ANON,
        occurred_at=T0,
        properties={"into": KNOWN},
    )
    anonymous.append(request.to_json())
    for event in later_events:
        anonymous.append(event.to_json())
    changes = [s.stage_change for s in known.score(model).scored if s.stage_change]
    route(anonymous.score(model), known)
    for event in after:
        known.append(event.to_json())
    merged = known.score(model)
    changes += [s.stage_change for s in merged.scored if s.stage_change]
    from_merge = [s for s in merged.scored if s.score.trigger_event_id == "merge-1"]
    assert len([s for s in from_merge if s.stage_change]) <= 1

    expected = reference_fold(model, before, anonymous_events, later_events, after)
    state = known.leads.get(KNOWN)
    if expected is None:
        assert state is None
        return
    assert state is not None
    assert state.engagement == expected.engagement
    assert state.caps == expected.caps
    assert state.trait_values() == expected.trait_values()
    assert state.stage == expected.stage
    assert state.intent_event == expected.intent_event
    assert [c.sequence for c in changes] == list(range(1, len(changes) + 1))
    assert state.change_sequence == len(changes)


def _as(event: Event, lead_id: str, prefix: str) -> Event:
    return event.model_copy(update={"lead_id": lead_id, "event_id": f"{prefix}{event.event_id}"})
