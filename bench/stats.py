"""The numbers of a run: summaries of repeated measurements, the table, the JSON file."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Summary:
    """One metric over repeated runs: the median and the spread."""

    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    @property
    def minimum(self) -> float:
        return min(self.runs) if self.runs else math.nan

    @property
    def maximum(self) -> float:
        return max(self.runs) if self.runs else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "q1": percentile(self.runs, 25),
            "q3": percentile(self.runs, 75),
        }


@dataclass
class Target:
    """``ratio_min``: at least this fraction of the raw limit; ``value_max``: under this;
    ``value_min``: at least this."""

    kind: Literal["ratio_min", "value_max", "value_min"]
    value: float

    def text(self, unit: str) -> str:
        if self.kind == "ratio_min":
            return f">= {self.value:g}x raw"
        if self.kind == "value_min":
            return f">= {self.value:g} {unit}"
        return f"< {self.value:g} {unit}"


@dataclass
class Row:
    """One line of the table: a leadflow metric beside its baseline, and the fraction of it."""

    case: str
    metric: str
    unit: str
    leadflow: Summary
    higher_is_better: bool = True
    baseline_name: str | None = None
    baseline: Summary | None = None
    target: Target | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """The fraction of the raw limit leadflow reaches (1.0 = as fast as the baseline).

        Throughput: leadflow / baseline. Latency: baseline / leadflow. Either way higher
        is better and the targets read the same way ("at least 0.5 of raw").
        """
        if self.baseline is None:
            return None
        ours, raw = self.leadflow.median, self.baseline.median
        if not (ours > 0 and raw > 0):
            return None
        return ours / raw if self.higher_is_better else raw / ours

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.target.kind == "ratio_min":
            return None if self.ratio is None else self.ratio >= self.target.value
        if self.target.kind == "value_min":
            return self.leadflow.median >= self.target.value
        return self.leadflow.median < self.target.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "leadflow": self.leadflow.to_dict(),
            "baseline_name": self.baseline_name,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.text(self.unit),
            "passed": self.passed,
            "notes": self.notes,
            "extra": self.extra,
        }


def fmt(value: float) -> str:
    """Compact and readable: 12,345 / 123.4 / 1.23 / 0.012."""
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def spread(summary: Summary) -> str:
    if len(summary.runs) < 2:
        return fmt(summary.median)
    return f"{fmt(summary.median)} [{fmt(summary.minimum)}-{fmt(summary.maximum)}]"


COLUMNS = ("case", "metric", "unit", "leadflow", "baseline", "raw", "ratio", "target", "ok")


def _cells(row: Row, missed: str) -> list[str]:
    """One row's columns; ``missed`` is how a missed target reads."""
    passed = row.passed
    return [
        row.case,
        row.metric,
        row.unit,
        spread(row.leadflow),
        row.baseline_name or "",
        "" if row.baseline is None else spread(row.baseline),
        "" if row.ratio is None else f"{row.ratio:.2f}",
        "" if row.target is None else row.target.text(row.unit),
        "" if passed is None else ("yes" if passed else missed),
    ]


def table_lines(rows: Sequence[Row]) -> list[str]:
    """One table: median [min-max] of each side, the ratio, the target and whether it is met."""
    cells = [list(COLUMNS), *(_cells(row, "NO") for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def markdown_lines(rows: Sequence[Row]) -> list[str]:
    """The same table in Markdown, for docs/benchmarks.md."""
    header = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return header + ["| " + " | ".join(_cells(row, "**no**")) + " |" for row in rows]


def write(line: str = "") -> None:
    """ruff bans print(): everything a run tells goes through here."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
