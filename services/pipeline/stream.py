"""``GET /v1/stream/stage-changes``: stage changes pushed as Server-Sent Events.

Each event is ``event: stage_change``, ``id:`` its feed position and ``data:`` the
very JSON item ``GET /v1/stage-changes`` returns, so a client can move between polling
and streaming with one cursor. The stream opens with an ``id``-only message holding
its start position: a browser's ``EventSource`` that reconnects before any change then
still resumes from there (``Last-Event-ID``), missing nothing. How changes reach the
stream, and why by polling: :mod:`services.pipeline.broadcast`.

Server shutdown: sse-starlette notices uvicorn's exit signal and sets each stream's
shutdown event; the stream ends at its next look (within one poll interval), cleanly,
so the process does not wait out uvicorn's graceful-shutdown timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Header, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from services.pipeline.broadcast import UNREACHABLE, FeedBroadcast
from services.pipeline.settings import PipelineSettings
from shared.auth import LeadsReader

log = logging.getLogger(__name__)

MAX_POSITION = 2**63 - 1
RETRY_AFTER_SECONDS = 5
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
"""Set here, not left to middleware: caches and buffering proxies would hold events back."""


class StageChangeStream(EventSourceResponse):
    """An event stream that holds one of the broadcast's places for exactly as long as it
    is served, whatever ends it (a HEAD that never starts it, a disconnect, a crash)."""

    def __init__(
        self, content: AsyncIterator[ServerSentEvent], leave: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(content, **kw)
        self._leave = leave

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("stream: a client stopped reading; dropped it")
        finally:
            self._leave()


def install_stream(app: FastAPI, settings: PipelineSettings) -> None:
    """The stream's route, and its shared poller run inside the app's lifespan (so the
    database is open first and closed last).

    On the app itself rather than through an included router, as the probes are
    (shared/probes.py): this FastAPI matches an included router by walking its routes,
    a cost every request to a route listed after it pays.
    """
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with started(app) as state:
            broadcast = FeedBroadcast(
                app.state.database.sessions,
                poll_seconds=settings.stream_poll_seconds,
                max_clients=settings.stream_max_clients,
            )
            app.state.broadcast = broadcast
            broadcast.start()
            try:
                yield state
            finally:
                await broadcast.close()

    app.router.lifespan_context = lifespan

    @app.get(
        "/v1/stream/stage-changes",
        summary="Stage changes as they are recorded, as Server-Sent Events",
        description=STREAM_DESCRIPTION,
        tags=["stage changes"],
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "An endless text/event-stream of `stage_change` events",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            503: {
                "description": (
                    "Every stream place is taken (LEADFLOW_STREAM_MAX_CLIENTS), or the "
                    "database does not answer; retry after Retry-After seconds"
                ),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
        },
    )
    async def stream_stage_changes(
        request: Request,
        _caller: LeadsReader,
        after: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_POSITION,
                description=(
                    "Start after this feed position (0: from the first change). Without it, "
                    "and without Last-Event-ID, the stream starts with the changes to come."
                ),
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                max_length=32,
                description="The id of the last event received; wins over `after`.",
            ),
        ] = None,
    ) -> Response:
        broadcast: FeedBroadcast = request.app.state.broadcast
        resume = _position(last_event_id) if last_event_id is not None else after
        if not broadcast.admit():
            return _unavailable("every stream place is taken; retry later")
        try:
            start = await broadcast.head() if resume is None else resume
        except UNREACHABLE:
            broadcast.leave()
            return _unavailable("the database is unavailable; retry later")
        shutdown = anyio.Event()
        events = _events(broadcast, start, shutdown.is_set)
        return StageChangeStream(
            events,
            broadcast.leave,
            headers=STREAM_HEADERS,
            ping=settings.stream_heartbeat_seconds,
            send_timeout=settings.stream_send_timeout_seconds,
            shutdown_event=shutdown,
            # the stream looks at its shutdown event at least once per poll
            shutdown_grace_period=settings.stream_poll_seconds + 1,
        )


async def _events(
    broadcast: FeedBroadcast, start: int, stopping: Callable[[], bool]
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(id=str(start))
    async for batch in broadcast.follow(start, stopping):
        for change in batch:
            yield ServerSentEvent(
                data=change.model_dump_json(), event="stage_change", id=str(change.position)
            )


def _position(last_event_id: str) -> int:
    """The feed position a Last-Event-ID names: an id this stream sent, or a 422."""
    text = last_event_id.strip()
    if text.isascii() and text.isdigit() and int(text) <= MAX_POSITION:
        return int(text)
    raise RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("header", "last-event-id"),
                "msg": "Last-Event-ID must be a feed position (an event id this stream sent)",
                "input": last_event_id,
            }
        ]
    )


def _unavailable(detail: str) -> Response:
    return JSONResponse(
        {"detail": detail},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), **STREAM_HEADERS},
    )


STREAM_DESCRIPTION = """\
Server-Sent Events, one per stage change, in feed order, each once:
`event: stage_change`, `id:` the change's feed position, `data:` the same JSON item as
`GET /v1/stage-changes` returns. The first message carries only an `id` (the start
position), so a reconnecting client resumes from there. Resume with the `Last-Event-ID`
header (what `EventSource` sends by itself) or `?after=`; the header wins. A comment line
(`: ping ...`) arrives every LEADFLOW_STREAM_HEARTBEAT_SECONDS, so proxies keep an idle
stream open. At most
LEADFLOW_STREAM_MAX_CLIENTS streams are open at once; beyond that, a 503 with Retry-After.
New changes show within LEADFLOW_STREAM_POLL_SECONDS of being recorded.
"""
