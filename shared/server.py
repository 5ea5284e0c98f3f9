"""Running a service's ASGI app: the one way every leadflow process serves HTTP."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette

from shared.http_limits import HttpLimits, bounded_protocol
from shared.log import configure_logging
from shared.settings import LeadflowSettings


def serve(app: FastAPI, settings: LeadflowSettings, *, service: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; uvicorn then runs the lifespan's shutdown."""
    configure_logging(service, settings.log_level, settings.log_format)
    freeze_after_startup(app)
    uvicorn.Server(server_config(app, settings, host=settings.host, port=port)).run()


def http_limits(settings: LeadflowSettings) -> HttpLimits:
    return HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        header_timeout_seconds=settings.http_header_timeout_seconds,
        body_timeout_seconds=settings.http_body_timeout_seconds,
        max_connections=settings.http_max_connections,
    )


def server_config(
    app: Starlette, settings: LeadflowSettings, *, host: str, port: int
) -> uvicorn.Config:
    """The one uvicorn configuration, the tests' servers included.

    The bounded httptools protocol (shared/http_limits.py) instead of uvicorn's choice;
    no WebSocket upgrades (no service serves any); uvicorn's access log off, as
    ``leadflow.access`` writes one with the route and the key's name.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(http_limits(settings)),
        ws="none",
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        limit_concurrency=settings.http_max_connections,
        backlog=settings.http_backlog,
    )


def freeze_after_startup(app: FastAPI) -> None:
    """Hide what exists once the app has started from the cyclic garbage collector.

    Modules, routes, schemas, SQLAlchemy's and pydantic's internals: ~116,000 tracked
    objects that live as long as the process. CPython's full collection walks all of them
    every time: 60-220 ms during which the event loop stops (measured in pipeline under a
    steady load, every 3 to 30 s, each collecting nothing), straight into the latency of
    the Kafka consumer and of the REST API that share the loop. ``gc.freeze()`` moves them
    out of the collector's sight once startup is done; they are never garbage, and objects
    created later are collected as before.
    """
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # the services keep no state
        async with started(app):
            gc.freeze()
            yield

    app.router.lifespan_context = lifespan
