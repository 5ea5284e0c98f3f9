"""A write a loop must not pass over is tried again until it succeeds or the service stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.retrying import STOPPED, until_written

log = logging.getLogger("tests.retrying")


async def test_a_failed_write_is_tried_again_until_it_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | str] = [OSError("down"), "written"]
    failures: list[str] = []

    async def write() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    caplog.set_level(logging.WARNING, logger="tests.retrying")
    result = await until_written(
        write,
        retry_on=(OSError,),
        stopping=asyncio.Event(),
        what="writing a batch",
        log=log,
        on_failure=lambda: failures.append("failed"),
    )
    assert result == "written"
    assert failures == ["failed"]
    assert [r.getMessage() for r in caplog.records] == [
        "writing a batch failed (down); retrying in 0.2s"
    ]


async def test_stopping_ends_the_retries_without_the_write() -> None:
    stopping = asyncio.Event()
    stopping.set()
    attempts = 0

    async def write() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("down")

    result = await until_written(
        write, retry_on=(OSError,), stopping=stopping, what="storing messages", log=log
    )
    assert result is STOPPED
    assert attempts == 1


async def test_other_errors_are_not_retried() -> None:
    async def write() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await until_written(write, retry_on=(OSError,), stopping=asyncio.Event(), what="x", log=log)


async def test_a_failure_may_ask_for_a_longer_wait_than_the_backoff(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    outcomes: list[Exception | str] = [OSError("busy, wait 3"), OSError("down"), "written"]

    async def write() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def hint(exc: BaseException) -> float | None:
        return 3.0 if "wait 3" in str(exc) else None

    caplog.set_level(logging.WARNING, logger="tests.retrying")
    result = await until_written(
        write,
        retry_on=(OSError,),
        stopping=asyncio.Event(),
        what="posting",
        log=log,
        wait_hint=hint,
    )
    assert result == "written"
    assert waits == [3.0, 0.4]  # the hint, then the backoff where it left off
    assert caplog.records[0].getMessage() == "posting failed (busy, wait 3); retrying in 3.0s"


async def test_giving_up_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    stopping = asyncio.Event()
    stopping.set()

    async def write() -> None:
        raise OSError("down")

    caplog.set_level(logging.WARNING, logger="tests.retrying")
    result = await until_written(
        write, retry_on=(OSError,), stopping=stopping, what="posting", log=log
    )
    assert result is STOPPED
    assert [r.getMessage() for r in caplog.records] == ["posting failed (down); giving up"]
