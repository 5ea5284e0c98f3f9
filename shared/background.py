"""A service's Kafka loop run beside its HTTP server, on the server's event loop.

aiokafka binds its objects to the loop they are created on, so the loop
object is built inside the app lifespan, not when the app is. Until Kafka lets
the loop in (a broker down, a rejected password, an untrusted certificate, topics
not created yet), the service stays alive and not ready: the cause is logged once,
in one line (:mod:`shared.kafka_outage`), and the loop is tried again with a growing
delay. A loop that dies after it started makes ``/healthz`` fail, so the
orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from aiokafka.errors import KafkaError

from shared.kafka_outage import Reconnection, check_connection
from shared.settings import LeadflowSettings
from shared.topic_admin import TopicMismatch

log = logging.getLogger(__name__)

NOT_READY = (KafkaError, OSError, TimeoutError)
"""What a loop raises before it started when Kafka is not usable yet: tried again."""


class KafkaLoop(Protocol):
    started: asyncio.Event

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def kafka_reachable(self) -> bool: ...


L = TypeVar("L", bound=KafkaLoop)


class BackgroundLoop(Generic[L]):
    """Builds the loop once ``settings`` let a connection in, runs it, and builds a new one
    when it fails before it started (its ``run`` closes the clients it opened)."""

    def __init__(
        self, name: str, build: Callable[[], L], settings: LeadflowSettings | None = None
    ) -> None:
        self.name = name
        self._build = build
        self._settings = settings
        self.loop: L | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.reconnection = Reconnection(name)

    def start(self) -> None:
        self._stopping = asyncio.Event()  # on the running event loop
        self._task = asyncio.create_task(self._supervise(), name=self.name)
        self._task.add_done_callback(self._report_crash)

    async def stop(self) -> None:
        self._stopping.set()
        if self.loop is not None:
            self.loop.stop()
        if self._task is not None:
            if self.loop is None or not self.loop.started.is_set():
                self._task.cancel()  # a connection check or a start in progress
            with contextlib.suppress(Exception, asyncio.CancelledError):  # reported already
                await self._task

    def alive(self) -> bool:
        """False once the loop died: the process needs a restart."""
        return self._task is None or not self._task.done()

    def consuming(self) -> bool:
        running = self._task is not None and not self._task.done()
        return running and self.loop is not None and self.loop.started.is_set()

    async def kafka_ready(self) -> bool:
        return self.consuming() and self.loop is not None and await self.loop.kafka_reachable()

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._attempt()
                return
            except NOT_READY as exc:
                if self.loop is not None and self.loop.started.is_set():
                    raise  # it ran and died: a restart, as for any crash
                delay = self.reconnection.failed(str(exc) or type(exc).__name__)
            self.loop = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _attempt(self) -> None:
        if self._settings is not None:
            await check_connection(self._settings)
        self.loop = loop = self._build()
        running = asyncio.ensure_future(loop.run())
        started = asyncio.ensure_future(loop.started.wait())
        try:
            await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
            if started.done():
                self.reconnection.succeeded()
            await running
        finally:
            started.cancel()
            if not running.done():  # cancelled: let its clean-up run before we go on
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, TopicMismatch):
            log.error("%s cannot start: %s", self.name, exc)  # a setup to fix, no trace
        else:
            log.error("%s stopped", self.name, exc_info=exc)
