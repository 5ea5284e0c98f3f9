"""scoring's HTTP surface: probes, metrics and the active model; the worker runs beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, status

from services.scoring.account_worker import AccountWorker
from services.scoring.live_model import PublishedModels
from services.scoring.model import ScoringModel, load_model
from services.scoring.processes import WorkerProcesses
from services.scoring.publication import Publication, history
from services.scoring.settings import ScoringSettings
from services.scoring.worker import ScoringWorker
from shared.auth import RequireScope, install_auth
from shared.background import BackgroundLoop
from shared.http_edge import install_http_edge
from shared.probes import install_probes


def create_app(
    settings: ScoringSettings | None = None, model: ScoringModel | None = None
) -> FastAPI:
    settings = settings or ScoringSettings()
    scoring_model = model or load_model(settings.scoring_model)  # a bad model fails at start
    worker = BackgroundLoop(
        "scoring-worker", lambda: ScoringWorker(settings, scoring_model), settings
    )
    accounts = BackgroundLoop(
        "account-worker", lambda: AccountWorker(settings, scoring_model), settings
    )
    more_workers = WorkerProcesses(settings, scoring_model, settings.scoring_processes - 1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        more_workers.start()
        if settings.scoring_accounts:
            accounts.start()
        yield
        await accounts.stop()
        await more_workers.stop()
        await worker.stop()

    app = FastAPI(
        title="leadflow scoring",
        version="1",
        summary="Scores leads on fit and engagement and moves them through the stages.",
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.accounts = accounts

    async def readiness() -> Mapping[str, bool]:
        checks = {"worker": worker.consuming(), "kafka": await worker.kafka_ready()}
        if settings.scoring_processes > 1:
            checks["worker_processes"] = more_workers.consuming()
        if settings.scoring_accounts:
            checks["accounts"] = accounts.consuming()
        return checks

    def alive() -> bool:
        accounts_alive = not settings.scoring_accounts or accounts.alive()
        return worker.alive() and more_workers.alive() and accounts_alive

    install_probes(app, readiness, alive)
    install_http_edge(app, settings)

    published_models = PublishedModels(settings)

    reader = [Depends(RequireScope("leads:read"))]

    @app.get("/v1/model", summary="The live scoring model", dependencies=reader)
    async def get_model() -> dict[str, Any]:
        """The model last published with ``leadflow rescore --publish``; before any, the
        model file the workers run. Each partition switches when its worker reaches the
        publication's switch record, so for a moment after a publication some still
        score under the previous one."""
        published = await published_models.publications()
        if published:
            return dict(published[-1].model)
        return scoring_model.model_dump(mode="json", by_alias=True, exclude_none=True)

    @app.get("/v1/model/history", summary="Which model version was live when", dependencies=reader)
    async def get_model_history() -> dict[str, Any]:
        """Oldest first; ``live_from`` null: the model file the workers ran before the first
        publication."""
        published = await published_models.publications()
        if published is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"{settings.topics.models} cannot be read now; retry later",
                headers={"Retry-After": "5"},
            )
        return {"items": history(published or [Publication.of(scoring_model, None)])}

    install_auth(app, settings)
    return app
