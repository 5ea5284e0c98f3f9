"""scoring's HTTP surface: probes, metrics and the active model; the worker runs beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from services.scoring.account_worker import AccountWorker
from services.scoring.model import ScoringModel, load_model
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        if settings.scoring_accounts:
            accounts.start()
        yield
        await accounts.stop()
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
        if settings.scoring_accounts:
            checks["accounts"] = accounts.consuming()
        return checks

    def alive() -> bool:
        return worker.alive() and (not settings.scoring_accounts or accounts.alive())

    install_probes(app, readiness, alive)
    install_http_edge(app, settings)

    @app.get(
        "/v1/model",
        summary="The active scoring model",
        dependencies=[Depends(RequireScope("leads:read"))],
    )
    async def get_model() -> dict[str, Any]:
        return scoring_model.model_dump(mode="json", exclude_none=True)

    install_auth(app, settings)
    return app
