"""``leadflow demo`` against services that refuse it: one clear line, a non-zero exit."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devtools.broker import free_port
from shared.cli import main
from tests.servers import serving


def refusing(status: int, seen: list[str | None]) -> FastAPI:
    """Answers every request with ``status``, noting the Authorization header it got."""
    app = FastAPI()

    @app.middleware("http")
    async def refuse(request: Request, _: object) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({"detail": "no"}, status_code=status)

    return app


def demo(url: str, *options: str) -> list[str]:
    return ["demo", "--ingest-url", url, "--pipeline-url", url, "--leads", "3", *options]


@pytest.mark.parametrize(
    ("status", "advice"),
    [(401, "give a valid key with --api-key"), (403, "the key lacks a scope")],
)
def test_a_refused_key_ends_the_demo_with_one_line(
    status: int, advice: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str | None] = []
    with serving(refusing(status, seen)) as url:
        code = main(demo(url, "--api-key", "lf_demo_key"))
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith(f"leadflow demo: POST {url}/v1/events/batch answered {status}")
    assert advice in err
    assert "Traceback" not in err
    assert seen == ["Bearer lf_demo_key"]


def test_the_key_comes_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADFLOW_DEMO_API_KEY", "from-env")
    seen: list[str | None] = []
    with serving(refusing(401, seen)) as url:
        assert main(demo(url)) != 0
    assert seen == ["Bearer from-env"]
    assert "401" in capsys.readouterr().err


def test_no_service_listening_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(demo(url)) != 0
    err = capsys.readouterr().err
    advice = "is the system running (`make run`)?"
    assert err == f"leadflow demo: cannot reach POST {url}/v1/events/batch: {advice}\n"
