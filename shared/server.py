"""Running a service's ASGI app: the one way every leadflow process serves HTTP."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from shared.log import configure_logging
from shared.settings import LeadflowSettings


def serve(app: FastAPI, settings: LeadflowSettings, *, service: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; uvicorn then runs the lifespan's shutdown."""
    configure_logging(service, settings.log_level, settings.log_format)
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
