"""Repeated warnings are thinned out and counted; other lines pass untouched."""

from __future__ import annotations

import logging

from shared.log import RepeatedLines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    message: str, *args: object, name: str = "aiokafka", level: int = logging.ERROR
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def passed(lines: RepeatedLines, records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if lines.filter(r)]


def test_a_flood_of_one_template_is_cut_to_the_limit_per_window_then_counted() -> None:
    clock = Clock()
    lines = RepeatedLines(limit=3, window=10.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    first = passed(lines, [record(template, 1, f"refused {n}") for n in range(1000)])
    assert first == [
        "Unable connect to node with id 1: refused 0",
        "Unable connect to node with id 1: refused 1",
        "Unable connect to node with id 1: refused 2"
        " [repeated; more like this are suppressed for 10s]",
    ]
    clock.now += 9.9
    assert passed(lines, [record(template, 1, "still")]) == []
    clock.now += 0.1
    assert passed(lines, [record(template, 1, "again")]) == [
        "Unable connect to node with id 1: again"
        " [998 more like this were suppressed since the last one logged]"
    ]


def test_each_logger_and_template_has_its_own_count() -> None:
    lines = RepeatedLines(limit=1, window=10.0, clock=Clock())
    records = [
        record("a %s", 1),
        record("a %s", 2),
        record("b %s", 1),
        record("a %s", 1, name="services.ingest"),
    ]
    assert [m.split(" [")[0] for m in passed(lines, records)] == ["a 1", "b 1", "a 1"]


def test_info_lines_are_never_thinned() -> None:
    lines = RepeatedLines(limit=1, window=10.0, clock=Clock())
    access = [
        record("%s %s %d", "GET", "/v1/leads", 200, name="leadflow.access", level=logging.INFO)
    ]
    assert len(passed(lines, access * 50)) == 50


def test_a_quiet_window_resets_the_count() -> None:
    clock = Clock()
    lines = RepeatedLines(limit=2, window=5.0, clock=clock)
    assert len(passed(lines, [record("x")] * 2)) == 2
    clock.now += 5.0
    assert passed(lines, [record("x")]) == ["x"]  # nothing was suppressed, nothing to report
