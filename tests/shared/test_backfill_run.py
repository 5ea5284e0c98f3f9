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
    wait_until_shown,
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


class Scoring:
    """The pipeline catching up: each lead's as_of, as it shows after each round."""

    def __init__(self, rounds: list[dict[str, datetime]]) -> None:
        self.rounds = rounds
        self.asked: list[list[str]] = []

    async def facts(self, lead_ids: Collection[str]) -> Mapping[str, LeadFacts]:
        self.asked.append(sorted(lead_ids))
        shown = self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]
        return {lead: LeadFacts(at) for lead, at in shown.items() if lead in lead_ids}


async def sent(count: int) -> Summary:
    checked = check(rows(count), "email")
    planned = await prepare(checked, Facts({}), HORIZON)
    return await send_plan(Summary(checked, planned), Sink(), 500, lambda _: None)


def day(n: int) -> datetime:
    return datetime(2026, 1, n, 10, tzinfo=UTC)


async def no_sleep(_: float) -> None:
    return None


async def test_the_import_ends_once_the_pipeline_shows_each_lead_as_of_its_newest_event() -> None:
    summary = await sent(4)  # lead0: days 1 and 3; lead1: days 2 and 4
    scoring = Scoring(
        [
            {"lead0@example.com": day(1)},
            {"lead0@example.com": day(3), "lead1@example.com": day(2)},
            {"lead0@example.com": day(3), "lead1@example.com": day(9)},  # a live event since
        ]
    )
    said: list[str] = []
    await wait_until_shown(summary, scoring, 60, said.append, clock=Clock(), sleep=no_sleep)
    assert scoring.asked == [
        ["lead0@example.com", "lead1@example.com"],
        ["lead0@example.com", "lead1@example.com"],
        ["lead1@example.com"],
    ]
    assert summary.shown == 2
    assert summary.unshown is None
    assert said == ["leadflow import: waiting for the pipeline to show 2 leads"]
    assert "scored      2 leads shown by the pipeline as of their newest imported event" in (
        summary.lines()
    )


async def test_a_pipeline_that_does_not_catch_up_is_said_after_the_wait() -> None:
    summary = await sent(2)
    scoring = Scoring([{"lead0@example.com": day(1)}])
    await wait_until_shown(summary, scoring, 3, lambda _: None, clock=Clock(), sleep=no_sleep)
    assert summary.shown == 1
    assert summary.unshown is not None
    assert summary.unshown.startswith("1 leads not shown with their newest imported event")
    assert summary.complete  # accepted all the same: only not seen yet
