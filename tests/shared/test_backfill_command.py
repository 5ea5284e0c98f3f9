"""``leadflow import`` when it cannot start: one line on stderr, a status that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.broker import free_port
from shared.cli import main


def nowhere() -> list[str]:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return ["--ingest-url", url, "--pipeline-url", url]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("events.xlsx", "", "cannot tell the format of"),
        ("events.csv", "lead_id,type,ocurred_at\n", "column 3 'ocurred_at' is not an event field"),
        ("events.jsonl", None, "cannot read"),
    ],
)
def test_a_file_that_cannot_be_used_is_status_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | None, problem: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["import", str(path), *nowhere()]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("leadflow import: ")
    assert problem in err


def test_a_bad_setting_is_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADFLOW_DEDUP_HORIZON_DAYS", "-1")
    path = tmp_path / "events.jsonl"
    path.write_text("")
    assert main(["import", str(path), *nowhere()]) == 2
    assert "LEADFLOW_DEDUP_HORIZON_DAYS" in capsys.readouterr().err


def test_a_pipeline_that_is_not_there_stops_the_import_before_it_sends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"lead_id": "ada@example.com", "type": "email.opened",'
        ' "occurred_at": "2026-03-01T09:00:00Z"}\n'
    )
    assert main(["import", str(path), *nowhere(), "--attempts", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "1 rows, 1 valid events of 1 leads" in err
    assert "reading the pipeline's funnel failed 1 times" in err
    assert "cannot connect" in err
    assert "Traceback" not in err
    assert "giving up" in err  # the retry's own line, where the progress is
