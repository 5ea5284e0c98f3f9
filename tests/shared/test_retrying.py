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
