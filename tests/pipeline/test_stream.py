"""The live stream of stage changes: a real SSE client against a real server on loopback.

Each test runs on SQLite and PostgreSQL (the ``database_url`` fixture). Changes are
written with the store, as the consumer writes them, while clients read; every read
waits with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devtools.broker import free_port
from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.broadcast import FeedBroadcast
from services.pipeline.settings import PipelineSettings
from shared.events import Stage, StageChange
from tests.pipeline.records import stage_change
from tests.pipeline.test_app import KEYS, MAILER, READER
from tests.servers import serving
from tests.waiting import eventually

Sessions = async_sessionmaker[AsyncSession]
STREAM = "/v1/stream/stage-changes"
DEADLINE = 30.0


def changes(first: int, count: int) -> list[StageChange]:
    """``count`` leads' first stage change, named from ``first`` on."""
    return [
        stage_change(f"lead-{n}@example.com", 1, Stage.LEAD) for n in range(first, first + count)
    ]


@contextmanager
def pipeline(database_url: str, **extra: Any) -> Iterator[str]:
    settings = PipelineSettings(
        database_url=database_url,
        pipeline_consume=False,
        stream_poll_seconds=0.05,
        **extra,
    )
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
def pipeline_url(database_url: str, sessions: Sessions) -> Iterator[str]:
    """The REST API on the test database, its tables emptied by ``sessions``."""
    with pipeline(database_url) as url:
        yield url


async def feed_items(sessions: Sessions) -> list[dict[str, Any]]:
    """The whole feed as the REST API serves it (JSON-ready)."""
    async with sessions() as session:
        feed = await store.feed(session, after=0, limit=10_000)
    return [item.model_dump(mode="json") for item in feed.items]


class Reader:
    """One open stream, read in the background into ``events``."""

    def __init__(self) -> None:
        self.events: list[ServerSentEvent] = []
        self.response: httpx.Response | None = None
        self.opened = asyncio.Event()

    @property
    def changes(self) -> list[ServerSentEvent]:
        return [event for event in self.events if event.event == "stage_change"]

    async def until(self, count: int) -> list[ServerSentEvent]:
        """The first ``count`` stage changes, once they have arrived."""
        await eventually(
            lambda: asyncio.sleep(0, self.changes), lambda got: len(got) >= count, DEADLINE, 0.02
        )
        return self.changes[:count]


@asynccontextmanager
async def reading(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Reader]:
    """A stream open for the block, its first message (the start position) received."""
    reader = Reader()

    async def read() -> None:
        async with (
            httpx.AsyncClient(timeout=DEADLINE) as client,
            aconnect_sse(client, "GET", url, headers=dict(headers or {})) as source,
        ):
            reader.response = source.response
            if source.response.status_code != 200:
                reader.opened.set()
                return
            async for event in source.aiter_sse():
                reader.events.append(event)
                reader.opened.set()

    task = asyncio.create_task(read())
    try:
        async with asyncio.timeout(DEADLINE):
            await asyncio.wait(
                [task, asyncio.ensure_future(reader.opened.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        if task.done():
            task.result()  # raise what the client met
        yield reader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def sample(name: str) -> float:
    """A metric of the server (it runs in this process): counters only ever grow."""
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


def positions(events: Sequence[ServerSentEvent]) -> list[int]:
    return [int(event.id) for event in events]


async def test_each_change_arrives_once_in_order_as_the_feed_serves_it(
    pipeline_url: str, sessions: Sessions
) -> None:
    await store.record_batch(sessions, changes(0, 3), [])  # before the stream: not sent
    async with reading(pipeline_url + STREAM) as reader:
        assert reader.response is not None
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["cache-control"] == "no-store"
        assert reader.response.headers["x-accel-buffering"] == "no"
        start = int(reader.events[0].id)
        for batch in range(5):  # written while the client reads
            await store.record_batch(sessions, changes(10 + 7 * batch, 7), [])
        received = await reader.until(35)

    expected = [item for item in await feed_items(sessions) if item["position"] > start]
    assert len(expected) == 35
    assert positions(received) == [item["position"] for item in expected]
    assert [json.loads(event.data) for event in received] == expected
    assert len(reader.changes) == 35, "a change arrived twice"


async def test_resuming_from_last_event_id_gives_each_change_once(
    pipeline_url: str, sessions: Sessions
) -> None:
    await store.record_batch(sessions, changes(0, 10), [])
    async with reading(pipeline_url + STREAM + "?after=0") as first:
        seen = await first.until(4)
    last_id = seen[-1].id
    await store.record_batch(sessions, changes(10, 6), [])

    # ?after= is the original URL's: the header, as EventSource sends it, wins.
    async with reading(
        pipeline_url + STREAM + "?after=0", headers={"Last-Event-ID": last_id}
    ) as resumed:
        rest = await resumed.until(12)
        await store.record_batch(sessions, changes(16, 2), [])
        rest = await resumed.until(14)

    everything = [item["position"] for item in await feed_items(sessions)]
    assert positions(seen) + positions(rest) == everything
    assert len(everything) == 18
    assert len(resumed.changes) == 14, "a change arrived twice"


async def test_a_stream_that_opens_before_any_change_marks_where_it_started(
    pipeline_url: str, sessions: Sessions
) -> None:
    await store.record_batch(sessions, changes(0, 2), [])
    async with reading(pipeline_url + STREAM) as reader:
        marker = reader.events[0]
    assert (marker.event, marker.data) == ("message", "")
    assert int(marker.id) == (await feed_items(sessions))[-1]["position"]
    # a reconnect with that id gets what came after, nothing before
    await store.record_batch(sessions, changes(2, 1), [])
    async with reading(pipeline_url + STREAM, headers={"Last-Event-ID": marker.id}) as again:
        (only,) = await again.until(1)
    assert json.loads(only.data)["lead_id"] == "lead-2@example.com"


async def test_clients_beyond_the_bound_get_503_with_retry_after(
    database_url: str, sessions: Sessions
) -> None:
    with pipeline(database_url, stream_max_clients=2) as url:
        stream_url = url + STREAM

        async def status() -> int:
            async with (
                httpx.AsyncClient(timeout=DEADLINE) as client,
                client.stream("GET", stream_url) as response,
            ):
                return response.status_code

        refused_before = sample("leadflow_pipeline_stream_refused_total")
        async with reading(stream_url) as one:
            async with reading(stream_url), reading(stream_url) as refused:
                assert refused.response is not None
                assert refused.response.status_code == 503
                assert int(refused.response.headers["retry-after"]) > 0
                assert refused.response.headers["cache-control"] == "no-store"
                assert sample("leadflow_pipeline_stream_clients") == 2
                assert sample("leadflow_pipeline_stream_refused_total") == refused_before + 1
            # a place is free again once a client has gone
            assert await eventually(status, lambda code: code == 200, DEADLINE, 0.05) == 200
            assert one.response is not None
            assert one.response.status_code == 200


async def test_heartbeats_arrive_while_nothing_changes(
    database_url: str, sessions: Sessions
) -> None:
    with pipeline(database_url, stream_heartbeat_seconds=0.1) as url:
        async with (
            httpx.AsyncClient(timeout=DEADLINE) as client,
            client.stream("GET", url + STREAM) as response,
            asyncio.timeout(DEADLINE),
        ):
            comments = 0
            async for line in response.aiter_lines():
                comments += line.startswith(":")
                if comments == 3:
                    break
        assert comments == 3


async def test_the_stream_needs_leads_read(database_url: str, sessions: Sessions) -> None:
    with pipeline(database_url, api_keys=KEYS) as url:
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE) as client:
            assert (await client.get(STREAM)).status_code == 401
            refused = await client.get(STREAM, headers={"X-API-Key": MAILER})
            assert refused.status_code == 403
        async with reading(url + STREAM, headers={"X-API-Key": READER}) as reader:
            assert reader.response is not None
            assert reader.response.status_code == 200


async def test_a_client_that_stops_reading_is_dropped(
    database_url: str, sessions: Sessions
) -> None:
    """A client that never reads fills the socket; the stream waits at most the send
    timeout for it, then lets go of it and of its place."""
    for first in range(0, 12_000, 500):
        await store.record_batch(sessions, changes(first, 500), [])
    with pipeline(database_url, stream_send_timeout_seconds=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        tight = socket.socket()
        tight.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        tight.setblocking(False)
        await asyncio.get_running_loop().sock_connect(tight, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=tight)
        try:
            writer.write(f"GET {STREAM}?after=0 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            await eventually(
                lambda: asyncio.sleep(0, sample("leadflow_pipeline_stream_clients")),
                lambda clients: clients == 1,
                DEADLINE,
            )
            # 12,000 changes are megabytes: more than the server's socket buffer holds
            await eventually(
                lambda: asyncio.sleep(0, sample("leadflow_pipeline_stream_clients")),
                lambda clients: clients == 0,
                DEADLINE,
            )
        finally:
            # unread data in its buffer: closing resets the connection, and the server's
            # side of it goes too
            writer.close()
            await writer.wait_closed()
        del reader


async def test_a_malformed_last_event_id_is_a_422_naming_the_header(pipeline_url: str) -> None:
    async with httpx.AsyncClient(base_url=pipeline_url, timeout=DEADLINE) as client:
        for bad in ("abc", "-1", "1.5", str(2**63)):
            response = await client.get(STREAM, headers={"Last-Event-ID": bad})
            assert response.status_code == 422, bad
            (error,) = response.json()["detail"]
            assert error["loc"] == ["header", "last-event-id"]
        assert (await client.get(STREAM + "?after=-1")).status_code == 422


async def test_a_client_behind_the_window_reads_the_feed_and_misses_nothing(
    sessions: Sessions,
) -> None:
    """The broadcast's window holds 12 changes here; a client starting at 0 is far behind it
    while 60 more are written and polled, yet gets each once, in order."""
    broadcast = FeedBroadcast(sessions, poll_seconds=0.01, max_clients=4, page=3)
    broadcast.start()
    try:
        assert broadcast.admit()
        await store.record_batch(sessions, changes(0, 20), [])
        received: list[int] = []

        async def follow() -> None:
            async for batch in broadcast.follow(0, lambda: len(received) >= 80):
                received.extend(change.position for change in batch)
                await asyncio.sleep(0)  # let the poller and the writer run in between

        reading_task = asyncio.create_task(follow())
        for batch in range(6):
            await store.record_batch(sessions, changes(100 + 10 * batch, 10), [])
        async with asyncio.timeout(DEADLINE):
            await eventually(lambda: asyncio.sleep(0, received), lambda got: len(got) >= 80)
        reading_task.cancel()
        await asyncio.gather(reading_task, return_exceptions=True)
    finally:
        broadcast.leave()
        await broadcast.close()
    assert received == [item["position"] for item in await feed_items(sessions)]


async def test_shutdown_ends_open_streams_cleanly_and_promptly(tmp_path: Path) -> None:
    """SIGTERM with a stream open: the stream ends with its last chunk (not cut off), and
    the process shuts down without waiting out uvicorn's graceful-shutdown timeout."""
    port = free_port()
    environment = {
        **os.environ,
        "LEADFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'leadflow.db'}",
        "LEADFLOW_PIPELINE_CONSUME": "false",
        "LEADFLOW_HOST": "127.0.0.1",
        "LEADFLOW_PORT": str(port),
        "LEADFLOW_STREAM_POLL_SECONDS": "0.1",
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (started once; waited for off the loop)
        [sys.executable, "-m", "services.pipeline"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        async def ready() -> int:
            async with httpx.AsyncClient(timeout=5) as client:
                try:
                    return (await client.get(url + "/readyz")).status_code
                except httpx.TransportError:
                    return 0

        await eventually(ready, lambda code: code == 200, DEADLINE)
        async with (
            httpx.AsyncClient(timeout=DEADLINE) as client,
            aconnect_sse(client, "GET", url + STREAM) as source,
            asyncio.timeout(DEADLINE),
        ):
            events = source.aiter_sse()
            first = await anext(events)
            process.send_signal(signal.SIGTERM)
            rest = [event async for event in events]  # raises if the body is cut off
        assert first.id == "0"
        assert rest == []
        output, _ = await asyncio.to_thread(process.communicate, timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = output.decode()
    # uvicorn shuts down, then re-raises the signal it caught: SIGTERM's default ends it
    assert process.returncode == -signal.SIGTERM, log
    assert "Application shutdown complete" in log
    assert "graceful shutdown exceeded" not in log
    assert "without completing response" not in log
