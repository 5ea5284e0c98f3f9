"""Retrying a write a loop must not pass over: a batch into the database, dead letters
into Kafka, a delivery's attempt, a batch of imported events posted to ingest. The loop
cannot commit its offsets (or move on) until the write is done, so it tries again,
waiting longer each time, until the write succeeds or the service stops (the write then
comes back at the next start; the import stops after its attempts, and a re-run resends).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

T = TypeVar("T")

FIRST_DELAY = 0.2
MOST_DELAY = 5.0


class Stopped(enum.Enum):
    STOPPED = "stopped"


STOPPED = Stopped.STOPPED
"""What :func:`until_written` returns when the service stopped before the write succeeded."""


async def until_written(
    write: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    stopping: asyncio.Event,
    what: str,
    log: logging.Logger,
    on_failure: Callable[[], None] = lambda: None,
    wait_hint: Callable[[BaseException], float | None] = lambda _: None,
) -> T | Literal[Stopped.STOPPED]:
    """``write()``'s result once it succeeds; :data:`STOPPED` if ``stopping`` is set after
    a failure. Each failure calls ``on_failure`` (a readiness flag) and is logged as
    "``what`` failed (the error); retrying in N s". ``wait_hint``: the least wait the
    failure itself asks for (an HTTP ``Retry-After``), when longer than the backoff's."""
    delay = FIRST_DELAY
    while True:
        try:
            return await write()
        except retry_on as exc:
            on_failure()
            wait = max(delay, wait_hint(exc) or 0.0)
            if stopping.is_set():
                log.warning("%s failed (%s); giving up", what, exc)
                return STOPPED
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, MOST_DELAY)
