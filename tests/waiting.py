"""Waiting on conditions, never on fixed sleeps: poll until true or fail at the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    timeout: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until ``until(result)``; the last result is in the timeout's message."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(interval)
