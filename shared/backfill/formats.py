"""The two file formats of ``leadflow import``, read into raw envelopes: pure, no I/O.

JSON Lines: one event envelope (docs/architecture.md §4) per line, blank lines skipped.
CSV: one event per row, under a header naming the envelope's fields (:data:`CSV_COLUMNS`)
and, for a spreadsheet that has no JSON in it, one column per property or trait
(``properties.path``, ``traits.industry``). Each row or line becomes a :class:`Row`
with the line it started on, or a :class:`LineError` naming the line and the field, so
one bad line never hides the others. What the envelope's fields must hold is checked
later, by the one event schema (:mod:`.plan`), not here.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Format = Literal["jsonl", "csv"]

CSV_COLUMNS = ("event_id", "lead_id", "type", "occurred_at", "source", "properties", "traits")
"""The header names of the envelope's own fields; ``properties`` and ``traits`` hold a JSON
object each."""

CSV_REQUIRED = ("lead_id", "type", "occurred_at")

PREFIXES = ("properties.", "traits.")
"""A column ``properties.NAME`` or ``traits.NAME`` holds one property or trait."""

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class FileProblem(Exception):
    """The file as a whole cannot be read (a header that is wrong): nothing is imported."""


@dataclass(frozen=True, slots=True)
class Row:
    """One event envelope as the file spells it, before any check."""

    line: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line (or row) of the file is not imported."""

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


def format_of(name: str) -> Format | None:
    """The format a file's name says; ``None`` when it says none."""
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lowered.endswith(".csv"):
        return "csv"
    return None


def read_rows(lines: Iterable[str], file_format: Format) -> Iterator[Row | LineError]:
    return read_jsonl(lines) if file_format == "jsonl" else read_csv(lines)


def read_jsonl(lines: Iterable[str]) -> Iterator[Row | LineError]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield LineError(number, "line", f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield LineError(number, "line", f"must be a JSON object, got {type(value).__name__}")
            continue
        yield Row(number, value)


def read_csv(lines: Iterable[str]) -> Iterator[Row | LineError]:
    """Rows under the header; a header that names an unknown column is a :class:`FileProblem`
    (a misspelt ``ocurred_at`` would otherwise drop every row's time)."""
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = _columns(header)
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            yield LineError(line, "row", f"has {len(cells)} cells, the header {len(columns)}")
            continue
        fields, errors = _row_fields(line, columns, cells)
        yield from errors
        if not errors:
            yield Row(line, fields)


def _columns(header: Sequence[str]) -> list[str]:
    columns = []
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        lowered = name.lower()
        if lowered in CSV_COLUMNS:
            name = lowered
        else:
            prefix = next((p for p in PREFIXES if lowered.startswith(p)), None)
            if prefix is None or len(name) == len(prefix):
                allowed = ", ".join(CSV_COLUMNS)
                raise FileProblem(
                    f"line 1: column {position} {raw!r} is not an event field: use {allowed}, "
                    "or properties.NAME / traits.NAME for one property or trait"
                )
            name = prefix + name[len(prefix) :]
        if name in columns:
            raise FileProblem(f"line 1: column {name!r} appears twice")
        columns.append(name)
    missing = [name for name in CSV_REQUIRED if name not in columns]
    if missing:
        raise FileProblem(f"line 1: the header lacks the column(s) {', '.join(missing)}")
    return columns


def _row_fields(
    line: int, columns: Sequence[str], cells: Sequence[str]
) -> tuple[dict[str, Any], list[LineError]]:
    fields: dict[str, Any] = {}
    errors: list[LineError] = []
    for name, cell in zip(columns, cells, strict=False):
        text = cell.strip()
        if not text:
            continue  # an empty cell is a field not given
        if name in ("properties", "traits"):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                errors.append(LineError(line, name, 'must be a JSON object, e.g. {"path": "/"}'))
                continue
            _merge(fields.setdefault(name, {}), value, name, line, errors)
        elif name.startswith(PREFIXES):
            group, key = name.split(".", 1)
            _merge(fields.setdefault(group, {}), {key: cell_value(text)}, group, line, errors)
        else:
            fields[name] = text
    return fields, errors


def _merge(
    into: dict[str, Any], values: dict[str, Any], group: str, line: int, errors: list[LineError]
) -> None:
    for key, value in values.items():
        if key in into:
            errors.append(
                LineError(line, f"{group}.{key}", "given twice (in its own column and in JSON)")
            )
        else:
            into[key] = value


def cell_value(text: str) -> Any:
    """A property or trait cell: a number when it reads as one (``200``, ``1.5``), ``true``
    and ``false`` as booleans, anything else as the text it is (``02134`` stays a zip code)."""
    if _NUMBER.fullmatch(text):
        number = float(text)
        return int(text) if text.lstrip("-").isdigit() else number
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
