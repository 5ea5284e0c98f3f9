"""Sending a plan through the seams, without servers: batches in order, progress, the
summary, and an import that stops part way."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from shared.backfill.formats import LineError, Row
from shared.backfill.plan import LeadFacts, check
from shared.backfill.run import (
    Delivery,
    ImportStopped,
    Progress,
    Rejection,
    Summary,
    prepare,
    send_plan,
)
from shared.events import EventIn

HORIZON = timedelta(days=30)


def rows(count: int, leads: int = 2) -> list[Row | LineError]:
    return [
        Row(
            n + 1,
            {
                "event_id": f"e{n}",
                "lead_id": f"lead{n % leads}@example.com",
                "type": "email.opened",
                "occurred_at": f"2026-01-{1 + n:02d}T10:00:00Z",
            },
        )
        for n in range(count)
    ]


class Sink:
    def __init__(self, reject: Collection[str] = (), stop_at: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.reject = reject
        self.stop_at = stop_at

    async def send(self, events: Sequence[EventIn]) -> Delivery:
        if self.stop_at is not None and len(self.batches) == self.stop_at:
            raise ImportStopped("POST /v1/events/batch failed 8 times")
        self.batches.append([event.event_id for event in events])
        return Delivery([Rejection(e, "no") for e in events if e.event_id in self.reject])


class Facts:
    def __init__(self, known: Mapping[str, LeadFacts]) -> None:
        self.known = known
        self.asked: list[str] = []

    async def facts(self, lead_ids: Collection[str]) -> Mapping[str, LeadFacts]:
        self.asked += lead_ids
        return {lead: facts for lead, facts in self.known.items() if lead in lead_ids}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.6
        return self.now


async def test_batches_go_in_order_with_progress_and_a_summary() -> None:
    checked = check([*rows(5), LineError(9, "line", "not JSON")], "email")
    planned = await prepare(checked, Facts({}), HORIZON)
    sink, seen = Sink(reject={"e3"}), list[Progress]()
    summary = await send_plan(Summary(checked, planned), sink, 2, seen.append, clock=Clock())
    assert sink.batches == [["e0", "e1"], ["e2", "e3"], ["e4"]]
    assert (summary.sent, summary.accepted) == (5, 4)
    assert [r.event.event_id for r in summary.rejected] == ["e3"]
    assert summary.leads == {"lead0@example.com", "lead1@example.com"}
    # the clock moves 0.6 s a call: a report once a second has passed, and at the end
    assert [(p.sent, p.total) for p in seen] == [(4, 5), (5, 5)]
    assert seen[-1].line().startswith("leadflow import: 5/5 events sent (100%), 2 leads")
    assert not summary.complete  # a row was invalid, an event rejected


async def test_a_stopped_import_says_how_much_was_not_sent() -> None:
    checked = check(rows(5), "email")
    planned = await prepare(checked, Facts({}), HORIZON)
    summary = await send_plan(Summary(checked, planned), Sink(stop_at=1), 2, lambda _: None)
    assert (summary.sent, summary.accepted) == (2, 2)
    assert summary.stopped == "POST /v1/events/batch failed 8 times"
    assert "stopped     3 events not sent: POST /v1/events/batch failed 8 times" in summary.lines()
    assert not summary.complete


async def test_the_summary_lists_every_problem_after_the_counts() -> None:
    known = {"lead0@example.com": LeadFacts(datetime(2026, 6, 1, tzinfo=UTC))}
    checked = check([*rows(3), LineError(7, "occurred_at", "must be ...")], "email")
    facts = Facts(known)
    planned = await prepare(checked, facts, HORIZON)
    assert sorted(facts.asked) == ["lead0@example.com", "lead1@example.com"]
    summary = await send_plan(Summary(checked, planned), Sink(), 500, lambda _: None)
    lines = summary.lines()
    assert lines[:8] == [
        "read        4 rows, 3 distinct valid events",
        "invalid     1 rows, 1 errors (not sent)",
        "duplicates  0 rows repeating an earlier row's event (sent once)",
        "refused     2 events of 1 leads (history beyond the de-duplication horizon; not sent)",
        "sent        1",
        "accepted    1",
        "rejected    0 by ingest",
        "leads       1 touched",
    ]
    assert lines[8].startswith("elapsed")
    assert lines[9] == "line 7: occurred_at: must be ..."
    assert lines[10].startswith("lead lead0@example.com: refused, none of its 2 events sent")


async def test_a_dry_run_says_what_it_would_send() -> None:
    checked = check(rows(3), "email")
    planned = await prepare(checked, Facts({}), HORIZON)
    summary = Summary(checked, planned, dry_run=True)
    assert "would send  3" in summary.lines()
    assert "leads       2 to touch" in summary.lines()
    assert summary.complete


async def test_an_empty_file_asks_the_pipeline_nothing() -> None:
    facts = Facts({})
    planned = await prepare(check([], "email"), facts, HORIZON)
    assert facts.asked == []
    assert planned.send == []
