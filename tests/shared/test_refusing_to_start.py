"""A service that cannot start says why in one line, without a traceback or a secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.ingest.settings import IngestSettings
from shared.start_refusal import refusing_to_start


def test_settings_errors_name_the_variable_and_never_the_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LEADFLOW_KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(SystemExit) as exited, refusing_to_start("ingest"):
        IngestSettings()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("leadflow ingest: invalid settings: ")
    assert "LEADFLOW_KAFKA_SASL_MECHANISM" in err
    assert "hunter2-secret" not in err
    assert err.count("\n") == 1


def test_a_public_address_without_keys_exits_2_with_one_line() -> None:
    env = {"LEADFLOW_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "services.pipeline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("leadflow pipeline: refusing to serve on 0.0.0.0")
    assert "Traceback" not in done.stderr
