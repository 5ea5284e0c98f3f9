"""The pure parts of rescoring: replay, switch plan, publications and the dry-run report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.scoring.event_history import PartitionSpan
from services.scoring.model import ScoringModel, load_model
from services.scoring.publication import SWITCH_KEY, Publication, Switch, history, switch_of
from services.scoring.replay import replay
from services.scoring.rescore_report import LeadScore, build_report, render_text
from services.scoring.switch import plan_switch
from shared.events import Event, Stage
from tests.reference import reference

MODEL = load_model()
STRICT = MODEL.model_copy(update={"version": "strict-2"})
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def strict_model() -> ScoringModel:
    data = MODEL.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["version"] = "strict-2"
    data["stages"]["prospect"]["fit_min"] = 80
    return type(MODEL).model_validate(data)


def events() -> list[Event]:
    out = []
    for n in range(3):
        lead = f"lead-{n}"
        traits = QUALIFIED if n != 2 else {"industry": "saas"}
        out.append(Event(event_id=f"{lead}/1", type="lead.updated", lead_id=lead,
                         occurred_at=T0 + timedelta(minutes=n), traits=traits))  # fmt: skip
        out.append(Event(event_id=f"{lead}/2", type="form.submitted", lead_id=lead,
                         occurred_at=T0 + timedelta(minutes=10 + n)))  # fmt: skip
    return out


def records(stream: list[Event]) -> list[Rec]:
    return [Rec("e", 0, i, e.lead_id.encode(), e.to_json()) for i, e in enumerate(stream)]


def test_a_replay_gives_the_reference_and_skips_switch_records() -> None:
    switch = Switch("strict-2", T0)
    recs = records(events())
    recs.insert(2, Rec("e", 0, 99, SWITCH_KEY, switch.value()))
    replayed = replay(recs, strict_model())
    want = reference(events(), strict_model())
    assert set(replayed.scores) == set(want)
    for lead_id, expected in want.items():
        assert replayed.scores[lead_id].total == expected.score.total
        assert replayed.leads[lead_id].stage == expected.score.stage
    assert replayed.refused == 0


def test_the_switch_emits_one_stage_change_per_moved_lead_with_sequences_carried_on() -> None:
    live = replay(records(events()), MODEL).leads
    before = {k: (v.stage, v.score_sequence, v.change_sequence) for k, v in live.items()}
    switch = Switch("strict-2", T0 + timedelta(days=1))
    plan = plan_switch(live, replay(records(events()), strict_model()), switch)
    assert len(plan.scores) == 3
    moved = {c.lead_id: c for c in plan.stage_changes}
    for lead_id, (stage, score_seq, change_seq) in before.items():
        state = plan.leads[lead_id]
        assert state.score_sequence == score_seq + 1
        if lead_id in moved:
            change = moved[lead_id]
            assert (change.from_stage, change.to_stage) == (stage, state.stage)
            assert change.sequence == change_seq + 1 == state.change_sequence
            assert change.reason.startswith("model strict-2")
        else:
            assert state.stage == stage
            assert state.change_sequence == change_seq
    assert set(moved) == {"lead-0", "lead-1"}  # fit 75 < 80: back to lead


def test_a_switch_record_and_a_publication_read_back() -> None:
    switch = Switch("v7", T0)
    assert switch_of(Rec("e", 0, 1, SWITCH_KEY, switch.value())) == switch
    assert switch_of(Rec("e", 0, 1, SWITCH_KEY, b"{}")) is None
    assert switch_of(Rec("e", 0, 1, b"lead", switch.value())) is None
    publication = Publication.of(MODEL, T0, previous=None)
    again = Publication.read(publication.value())
    assert again.scoring_model() == MODEL
    assert again.same_model(MODEL)
    rows = history([Publication.of(MODEL, None), Publication.of(STRICT, T0)])
    assert rows[0]["live_until"] == rows[1]["live_from"] == "2026-11-02T09:00:00Z"


def test_the_report_counts_stages_moves_movers_and_incomplete_history() -> None:
    now = {k: LeadScore.of_score(s) for k, s in replay(records(events()), MODEL).scores.items()}
    new = {
        k: LeadScore.of_score(s)
        for k, s in replay(records(events()), strict_model()).scores.items()
    }
    spans = [PartitionSpan(0, 0, 6), PartitionSpan(1, 4, 9)]
    report = build_report(
        now, new, new_version="strict-2", spans=spans, partition_of=lambda lead: 1
    )
    assert report["stages"]["now"][Stage.PROSPECT.value] == 2
    assert report["stages"]["new"][Stage.PROSPECT.value] == 0
    assert report["moves"] == {"up": 0, "down": 2, "unchanged": 1,
                               "matrix": {"prospect": {"lead": 2}}}  # fmt: skip
    movers = report["top_movers"]  # same points, only the threshold moved: no rule named
    assert [(m["lead_id"], m["delta"], m["rules"]) for m in movers] == [
        ("lead-0", 0.0, []),
        ("lead-1", 0.0, []),
    ]
    assert report["history"]["complete"] is False
    assert report["history"]["leads_with_partial_history"] == 3
    assert sum(b["now"] for b in report["histogram"]["bins"]) == 3
    assert "INCOMPLETE" in render_text(report)


def test_the_changelog_marker_of_the_live_model_is_restored() -> None:
    from services.scoring.changelog import PartitionState, apply_record
    from services.scoring.state_records import LIVE_MODEL_KEY, live_model_record

    state = PartitionState()
    apply_record(state, LIVE_MODEL_KEY, live_model_record("v7", 41))
    assert state.model_version == "v7"
    assert state.leads == {}
