"""One poll of the stage-change feed shared by every open stream (docs/architecture.md §6).

The feed is the source of truth: positions are assigned under the writers'
serialisation and so become visible in commit order (see
:func:`services.pipeline.store.record_batch`). A single poller reads what is new since
its last position, once per interval and only while a stream is open, and keeps the
newest changes in a bounded window: a contiguous slice of the feed, every change with a
position in ``(window_after, head]``. A stream serves from the window when its position
is inside it, and pages the feed itself when it is behind (a resume from an old
``Last-Event-ID``, or a client slower than the window), so a slow client costs a query
rather than memory, and no position is skipped or repeated either way. Polling the
database, not a signal from the consumer, also serves replicas that only answer REST
and changes written by another replica.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.api_models import RecordedStageChange
from services.pipeline.metrics import STREAM_CLIENTS, STREAM_REFUSED

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]
UNREACHABLE = (SQLAlchemyError, OSError)
"""A database that is down or restarting: the stream waits for the next poll and retries."""


class FeedBroadcast:
    def __init__(
        self, sessions: Sessions, *, poll_seconds: float, max_clients: int, page: int = 500
    ) -> None:
        self._sessions = sessions
        self._poll_seconds = poll_seconds
        self._page = page
        self._window_size = 4 * page
        self.max_clients = max_clients
        self.clients = 0
        self._window: list[RecordedStageChange] = []
        self._positions: list[int] = []
        self._window_after: int | None = None
        self._tick = asyncio.Event()
        self._wanted = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- clients ------------------------------------------------------------------------

    def admit(self) -> bool:
        """Take a client's place; False when every place is taken."""
        if self.clients >= self.max_clients or self._closing.is_set():
            STREAM_REFUSED.inc()
            return False
        self.clients += 1
        STREAM_CLIENTS.inc()
        self._wanted.set()
        return True

    def leave(self) -> None:
        self.clients -= 1
        STREAM_CLIENTS.dec()

    async def head(self) -> int:
        async with self._sessions() as session:
            return await store.feed_head(session)

    async def follow(
        self, after: int, stopping: Callable[[], bool]
    ) -> AsyncIterator[list[RecordedStageChange]]:
        """Every change after position ``after``, in order, each once, in batches; ends when
        ``stopping()`` or the broadcast closes (checked at least once per poll)."""
        last = after
        while not stopping() and not self._closing.is_set():
            tick = self._tick  # taken before looking, so a poll in between still wakes us
            batch = self._from_window(last)
            if batch is None:
                batch = await self._from_feed(last)
            if batch:
                yield batch
                last = batch[-1].position
            else:
                await tick.wait()

    def _from_window(self, last: int) -> list[RecordedStageChange] | None:
        """What follows ``last`` in the window; None when the window does not cover it."""
        if self._window_after is None or last < self._window_after:
            return None
        start = bisect.bisect_right(self._positions, last)
        return self._window[start : start + self._page]

    async def _from_feed(self, last: int) -> list[RecordedStageChange]:
        try:
            async with self._sessions() as session:
                return (await store.feed(session, after=last, limit=self._page)).items
        except UNREACHABLE as exc:
            log.warning("stream: the feed could not be read, retrying at the next poll: %s", exc)
            return []

    # --- the poller ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline-stream-poller")

    async def close(self) -> None:
        """End every stream (at its next look) and the poller."""
        self._closing.set()
        self._wake()
        if self._task is not None:
            with contextlib.suppress(Exception):  # a crash was logged when it happened
                await self._task

    async def _run(self) -> None:
        try:
            while not self._closing.is_set():
                if self.clients == 0:
                    self._forget()
                    self._wanted.clear()
                    await self._until(self._wanted.wait())
                    continue
                try:
                    await self._poll()
                except UNREACHABLE as exc:
                    log.warning("stream: polling the feed failed, retrying: %s", exc)
                self._wake()
                await self._until(asyncio.sleep(self._poll_seconds))
        except Exception:
            log.exception("stream: the poller stopped; open streams end")
            raise
        finally:
            self._closing.set()
            self._wake()

    async def _until(self, waiting: Awaitable[object]) -> None:
        """Wait for ``waiting`` or for close, whichever comes first."""
        waiter = asyncio.ensure_future(waiting)
        closing = asyncio.ensure_future(self._closing.wait())
        await asyncio.wait({waiter, closing}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, closing):
            task.cancel()

    async def _poll(self) -> None:
        """Read what is new since the window's head: pages until a short one."""
        async with self._sessions() as session:
            if self._window_after is None:
                self._window_after = await store.feed_head(session)
            while True:
                head = self._positions[-1] if self._positions else self._window_after
                items = (await store.feed(session, after=head, limit=self._page)).items
                self._append(items)
                if len(items) < self._page:
                    return

    def _append(self, items: list[RecordedStageChange]) -> None:
        self._window.extend(items)
        self._positions.extend(item.position for item in items)
        excess = len(self._window) - self._window_size
        if excess > 0:
            self._window_after = self._positions[excess - 1]
            del self._window[:excess], self._positions[:excess]

    def _forget(self) -> None:
        """No stream is open: the window would go stale; the next poll starts afresh."""
        self._window_after = None
        self._window.clear()
        self._positions.clear()

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()
