"""scoring's HTTP surface: probes, metrics and the active model; the worker runs beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from services.scoring.model import ScoringModel, load_model
from services.scoring.settings import ScoringSettings
from services.scoring.worker import ScoringWorker
from shared.probes import probes_router

log = logging.getLogger(__name__)


class WorkerTask:
    """The worker and its task; created in the lifespan, on the server's event loop."""

    def __init__(self, settings: ScoringSettings, model: ScoringModel) -> None:
        self.settings = settings
        self.model = model
        self.worker: ScoringWorker | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.worker = ScoringWorker(self.settings, self.model)
        self.task = asyncio.create_task(self.worker.run(), name="scoring-worker")
        self.task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self.worker is not None and self.task is not None:
            self.worker.stop()
            with contextlib.suppress(Exception):  # a crash was reported when it happened
                await self.task

    def alive(self) -> bool:
        """False once the worker died: the process needs a restart."""
        return self.task is None or not self.task.done()

    async def readiness(self) -> Mapping[str, bool]:
        worker, task = self.worker, self.task
        running = worker is not None and task is not None and not task.done()
        consuming = running and worker is not None and worker.started.is_set()
        kafka = consuming and worker is not None and await worker.kafka_reachable()
        return {"worker": consuming, "kafka": kafka}


def create_app(
    settings: ScoringSettings | None = None, model: ScoringModel | None = None
) -> FastAPI:
    settings = settings or ScoringSettings()
    model = model or load_model(settings.scoring_model)  # a bad model fails here, at start
    runner = WorkerTask(settings, model)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        yield
        await runner.stop()

    app = FastAPI(
        title="leadflow scoring",
        version="1",
        summary="Scores leads on fit and engagement and moves them through the stages.",
        lifespan=lifespan,
    )
    app.include_router(probes_router(runner.readiness, runner.alive))

    @app.get("/v1/model", summary="The active scoring model")
    async def get_model() -> dict[str, Any]:
        return model.model_dump(mode="json", exclude_none=True)

    app.state.runner = runner
    return app


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the scoring worker stopped", exc_info=task.exception())
