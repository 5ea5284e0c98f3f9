"""Liveness, readiness and Prometheus metrics: the same three routes on every service.

Liveness says the process answers; readiness says its dependencies (Kafka,
the database) answer, so a load balancer or Kubernetes stops routing to a
replica that cannot do its job without restarting it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel, Field

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


class Health(BaseModel):
    status: str = Field(description='"ok", or "broken" with a 503.')


class Readiness(BaseModel):
    status: str = Field(description='"ready", or "not ready" with a 503.')
    checks: dict[str, bool] = Field(description="Each dependency, and whether it answers.")


def probes_router(
    readiness: ReadinessCheck,
    liveness: Callable[[], bool] = lambda: True,
    responses: Mapping[int | str, dict[str, Any]] | None = None,
) -> APIRouter:
    """``/healthz`` (``liveness``: false asks to be restarted), ``/readyz`` (``readiness``:
    one flag per dependency) and ``/metrics``; ``responses``: documented on each."""
    router = APIRouter(tags=["operations"], responses=dict(responses or {}))

    @router.get(
        "/healthz",
        summary="The process is alive",
        responses={503: {"model": Health, "description": "Broken beyond repair: restart it"}},
    )
    async def healthz(response: Response) -> Health:
        if not liveness():
            response.status_code = 503
            return Health(status="broken")
        return Health(status="ok")

    @router.get(
        "/readyz",
        summary="Every dependency answers",
        responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
    )
    async def readyz(response: Response) -> Readiness:
        checks = dict(await readiness())
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        return Readiness(status="ready" if ready else "not ready", checks=checks)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def exposition() -> bytes:
    """This process's metrics; with ``PROMETHEUS_MULTIPROC_DIR`` set, those of all the
    service's processes (scoring's extra workers), summed or labelled by pid as each kind
    of metric requires."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def install_probes(
    app: FastAPI, readiness: ReadinessCheck, liveness: Callable[[], bool] = lambda: True
) -> None:
    """Add the probes to ``app``'s own route table, where they are documented as if included.

    Not ``include_router``: this FastAPI matches an included router by walking its routes
    with per-request scope bookkeeping, a cost every request to a route listed after it
    pays.
    """
    router = probes_router(readiness, liveness, responses=app.router.responses)
    app.router.routes.extend(router.routes)
