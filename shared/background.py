"""A service's Kafka loop run beside its HTTP server, on the server's event loop.

aiokafka binds its objects to the loop they are created on, so the loop
object is built inside the app lifespan, not when the app is. A loop that
dies makes ``/healthz`` fail, so the orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class KafkaLoop(Protocol):
    started: asyncio.Event

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def kafka_reachable(self) -> bool: ...


L = TypeVar("L", bound=KafkaLoop)


class BackgroundLoop(Generic[L]):
    def __init__(self, name: str, build: Callable[[], L]) -> None:
        self.name = name
        self._build = build
        self.loop: L | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.loop = self._build()
        self._task = asyncio.create_task(self.loop.run(), name=self.name)
        self._task.add_done_callback(self._report_crash)

    async def stop(self) -> None:
        if self.loop is not None and self._task is not None:
            self.loop.stop()
            with contextlib.suppress(Exception):  # a crash was reported when it happened
                await self._task

    def alive(self) -> bool:
        """False once the loop died: the process needs a restart."""
        return self._task is None or not self._task.done()

    def consuming(self) -> bool:
        running = self._task is not None and not self._task.done()
        return running and self.loop is not None and self.loop.started.is_set()

    async def kafka_ready(self) -> bool:
        return self.consuming() and self.loop is not None and await self.loop.kafka_reachable()

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped", self.name, exc_info=task.exception())
