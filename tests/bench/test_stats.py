"""The benchmark's arithmetic: every figure in docs/benchmarks.md goes through it."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import Row, Summary, Target, fmt, markdown_lines, percentile, table_lines

samples = st.lists(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=2, max_size=200
)


@given(samples, st.integers(min_value=1, max_value=99))
def test_a_percentile_interpolates_between_the_closest_ranks(values: list[float], q: int) -> None:
    # statistics' "inclusive" method is the same definition (R's type 7), written apart
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    assert percentile(values, q) == pytest.approx(expected, rel=1e-9, abs=1e-6)


@given(samples)
def test_the_ends_are_the_extremes(values: list[float]) -> None:
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)


def test_no_samples_have_no_percentile() -> None:
    assert math.isnan(percentile([], 99))
    assert math.isnan(Summary([]).median)


def test_a_summary_is_the_median_and_the_spread_of_its_runs() -> None:
    summary = Summary([30.0, 10.0, 20.0, 40.0])
    assert (summary.median, summary.minimum, summary.maximum) == (25.0, 10.0, 40.0)
    assert summary.to_dict()["q1"] == pytest.approx(17.5)


def throughput(ours: list[float], raw: list[float], at_least: float = 0.5) -> Row:
    return Row(
        "case",
        "events",
        "events/s",
        Summary(ours),
        baseline_name="raw",
        baseline=Summary(raw),
        target=Target("ratio_min", at_least),
    )


def test_a_throughput_ratio_is_ours_over_raw_and_meets_its_target_from_half() -> None:
    row = throughput([40.0, 50.0, 60.0], [100.0, 100.0, 90.0])
    assert row.ratio == pytest.approx(0.5)
    assert row.passed is True
    assert throughput([49.0], [100.0]).passed is False


def test_a_latency_ratio_is_raw_over_ours() -> None:
    row = Row(
        "case",
        "p99",
        "ms",
        Summary([200.0, 240.0, 300.0]),
        higher_is_better=False,
        baseline=Summary([12.0]),
        target=Target("value_max", 250.0),
    )
    assert row.ratio == pytest.approx(0.05)
    assert row.passed is True  # the median of the runs, 240 ms, is under 250
    assert Row("c", "p99", "ms", Summary([251.0]), target=Target("value_max", 250)).passed is False


def test_no_ratio_without_a_positive_baseline() -> None:
    assert Row("c", "m", "u", Summary([1.0])).ratio is None
    assert throughput([1.0], [0.0]).ratio is None
    assert throughput([1.0], [0.0]).passed is None
    assert Row("c", "m", "u", Summary([1.0])).passed is None


def test_the_tables_say_which_targets_are_missed() -> None:
    rows = [throughput([60.0, 55.0, 70.0], [100.0]), throughput([10.0], [100.0])]
    text = table_lines(rows)
    header = ["case", "metric", "unit", "leadflow", "baseline", "raw", "ratio", "target", "ok"]
    assert text[0].split() == header
    assert set(text[1]) <= {"-", " "}
    assert text[2].endswith("yes")
    assert "60.0 [55.0-70.0]" in text[2]
    assert "0.60" in text[2]
    assert text[3].endswith("NO")
    markdown = markdown_lines(rows)
    assert markdown[1] == "|" + "---|" * 9
    assert markdown[3].endswith("| **no** |")
    assert all(line.count("|") == 10 for line in markdown)


@pytest.mark.parametrize(
    ("value", "text"),
    [(12345.6, "12,346"), (123.4, "123"), (12.34, "12.3"), (1.234, "1.23"), (0.01234, "0.012")],
)
def test_figures_keep_three_or_four_significant_digits(value: float, text: str) -> None:
    assert fmt(value) == text
    assert fmt(math.nan) == "-"


def test_a_minimum_target_is_met_at_the_value_itself() -> None:
    target = Target("value_min", 100.0)
    assert target.text("leads/s") == ">= 100 leads/s"
    assert Row("memory", "restore", "leads/s", Summary([100.0]), target=target).passed
    assert not Row("memory", "restore", "leads/s", Summary([99.0]), target=target).passed
