"""The import's two file formats, read into envelopes with the line each came from."""

from __future__ import annotations

import pytest

from shared.backfill.formats import (
    FileProblem,
    LineError,
    Row,
    cell_value,
    format_of,
    read_csv,
    read_jsonl,
)


def test_json_lines_skip_blank_lines_and_name_each_bad_one() -> None:
    lines = [
        '{"lead_id": "ada@example.com", "type": "email.opened"}\n',
        "\n",
        "not json\n",
        "[1, 2]\n",
        '{"lead_id": "bob@example.com"}\r\n',
    ]
    rows = list(read_jsonl(lines))
    assert rows[0] == Row(1, {"lead_id": "ada@example.com", "type": "email.opened"})
    assert isinstance(rows[1], LineError)
    assert (rows[1].line, rows[1].field) == (3, "line")
    assert rows[1].reason.startswith("not JSON")
    assert rows[2] == LineError(4, "line", "must be a JSON object, got list")
    assert rows[3] == Row(5, {"lead_id": "bob@example.com"})


def test_csv_columns_map_to_the_envelope_with_one_column_per_property_or_trait() -> None:
    text = [
        "Event_ID,lead_id,type,occurred_at,properties.path,traits.employees,traits.industry\n",
        "e1,ada@example.com,page.viewed,2026-01-05T10:00:00Z,/pricing,,\n",
        "e2,ada@example.com,lead.updated,2026-01-05T11:00:00Z,,200,saas\n",
    ]
    rows = list(read_csv(text))
    assert rows == [
        Row(
            2,
            {
                "event_id": "e1",
                "lead_id": "ada@example.com",
                "type": "page.viewed",
                "occurred_at": "2026-01-05T10:00:00Z",
                "properties": {"path": "/pricing"},
            },
        ),
        Row(
            3,
            {
                "event_id": "e2",
                "lead_id": "ada@example.com",
                "type": "lead.updated",
                "occurred_at": "2026-01-05T11:00:00Z",
                "traits": {"employees": 200, "industry": "saas"},
            },
        ),
    ]


def test_csv_json_columns_and_quoted_cells_over_several_lines() -> None:
    text = [
        "lead_id,type,occurred_at,properties,traits\n",
        'ada@example.com,form.submitted,2026-01-05T10:00:00Z,"{""form"": ""contact"",\n',
        '""note"": ""two lines""}",\n',
        "bob@example.com,form.submitted,2026-01-05T10:00:00Z,[1],\n",
    ]
    rows = list(read_csv(text))
    assert rows[0] == Row(
        2,
        {
            "lead_id": "ada@example.com",
            "type": "form.submitted",
            "occurred_at": "2026-01-05T10:00:00Z",
            "properties": {"form": "contact", "note": "two lines"},
        },
    )
    assert rows[1] == LineError(4, "properties", 'must be a JSON object, e.g. {"path": "/"}')


def test_a_property_given_twice_is_an_error_of_its_row() -> None:
    text = [
        "lead_id,type,occurred_at,properties,properties.path\n",
        'ada@example.com,page.viewed,2026-01-05T10:00:00Z,"{""path"": ""/a""}",/b\n',
    ]
    assert list(read_csv(text)) == [
        LineError(2, "properties.path", "given twice (in its own column and in JSON)")
    ]


def test_a_row_longer_than_the_header_is_an_error() -> None:
    text = ["lead_id,type,occurred_at\n", "a,b,c,d\n"]
    assert list(read_csv(text)) == [LineError(2, "row", "has 4 cells, the header 3")]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("lead_id,type,ocurred_at\n", "column 3 'ocurred_at' is not an event field"),
        ("lead_id,type\n", "lacks the column(s) occurred_at"),
        ("lead_id,type,occurred_at,traits.\n", "column 4 'traits.' is not an event field"),
        ("lead_id,type,occurred_at,LEAD_ID\n", "column 'lead_id' appears twice"),
    ],
)
def test_a_wrong_header_stops_the_whole_file(header: str, problem: str) -> None:
    with pytest.raises(FileProblem, match=problem.replace("(", r"\(").replace(")", r"\)")):
        list(read_csv([header, "x,y,z\n"]))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("200", 200),
        ("-3", -3),
        ("1.5", 1.5),
        ("2e3", 2000.0),
        ("02134", "02134"),
        ("TRUE", True),
        ("false", False),
        ("+15551234", "+15551234"),
        ("saas", "saas"),
    ],
)
def test_a_cell_is_a_number_or_boolean_when_it_reads_as_one(text: str, value: object) -> None:
    got = cell_value(text)
    assert got == value
    assert type(got) is type(value)


def test_the_format_comes_from_the_name() -> None:
    assert format_of("history.JSONL") == "jsonl"
    assert format_of("history.ndjson") == "jsonl"
    assert format_of("export.csv") == "csv"
    assert format_of("export.xlsx") is None
