"""webhooks' HTTP surface: endpoints, their messages and replay (scope admin), the probes.

The work is in two loops the lifespan starts: the Kafka consumer stores
messages (consumer.py), the deliverer posts them (delivery.py). The OpenAPI
document's ``webhooks`` section describes what a subscribed endpoint receives.
"""

# No ``from __future__ import annotations``: the webhooks section builds each receiver
# signature from a local model, which FastAPI can only resolve when evaluated.

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Header
from sqlalchemy.exc import SQLAlchemyError

from services.pipeline.app import _DATABASE_DOWN, _database_unavailable
from services.pipeline.db import Database
from services.webhooks import endpoints_api, messages_api
from services.webhooks.api_models import WEBHOOK_BODIES
from services.webhooks.consumer import WebhooksConsumer
from services.webhooks.delivery import Clock, Deliverer, utc_now
from services.webhooks.migrate import migrate
from services.webhooks.sealing import SecretBox
from services.webhooks.service import Service
from services.webhooks.settings import WebhooksSettings
from services.webhooks.ssrf import Policy
from shared.auth import install_auth
from shared.background import BackgroundLoop
from shared.probes import install_probes

log = logging.getLogger(__name__)


def create_app(settings: WebhooksSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    """``clock``: what decides which messages are due (tests pass one they move by hand)."""
    settings = settings or WebhooksSettings()
    box = SecretBox(settings.webhooks_secret_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not box.seals:
            log.warning(
                "LEADFLOW_WEBHOOKS_SECRET_KEY is unset: signing secrets are stored unsealed"
            )
        await migrate(settings.webhooks_database_url)
        database = Database.connect(
            settings.webhooks_database_url,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            sqlite_immediate=True,
        )
        deliverer = BackgroundLoop(
            "webhooks-deliverer", lambda: Deliverer(settings, database, box, clock)
        )
        deliverer.start()
        assert deliverer.loop is not None
        wake = deliverer.loop.wake if settings.webhooks_deliver else (lambda: None)
        if not settings.webhooks_deliver:
            await deliverer.stop()
        consumer = BackgroundLoop(
            "webhooks-consumer", lambda: WebhooksConsumer(settings, database, clock, wake)
        )
        app.state.consumer, app.state.deliverer = consumer, deliverer
        app.state.service = Service(
            settings,
            database,
            box,
            Policy.of(settings.webhooks_allow_http, settings.allowed_networks),
            clock,
            deliverer.loop.delivery,
            wake,
        )
        if settings.webhooks_consume:
            consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            await deliverer.stop()
            del app.state.service
            await database.dispose()

    app = FastAPI(
        title="leadflow webhooks",
        version="1",
        summary="Signed webhooks to CRMs: subscriptions, deliveries, replay.",
        lifespan=lifespan,
        responses=_DATABASE_DOWN,
    )
    app.add_exception_handler(SQLAlchemyError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)
    # Onto the app's own route table, as the probes are: this FastAPI keeps an included
    # router as one entry, which the auth module's OpenAPI declarations do not look into.
    app.router.routes.extend(endpoints_api.router.routes + messages_api.router.routes)
    _document_webhooks(app)

    async def readiness() -> Mapping[str, bool]:
        service: Service = app.state.service
        checks = {
            "database": await service.database.is_reachable(settings.readiness_timeout_seconds)
        }
        consumer: BackgroundLoop[WebhooksConsumer] = app.state.consumer
        if settings.webhooks_consume:
            writing = consumer.loop is None or consumer.loop.database_ok
            checks["database"] = checks["database"] and writing
            checks["consumer"] = consumer.consuming()
            checks["kafka"] = await consumer.kafka_ready()
        if settings.webhooks_deliver:
            checks["deliverer"] = app.state.deliverer.consuming()
        return checks

    def alive() -> bool:
        loops = [getattr(app.state, name, None) for name in ("consumer", "deliverer")]
        return all(loop is None or loop.alive() for loop in loops)

    install_probes(app, readiness, alive)
    install_auth(app, settings)
    return app


def _document_webhooks(app: FastAPI) -> None:
    """OpenAPI 3.1 ``webhooks``: each event type, its body and its Standard Webhooks headers."""
    for kind, model in WEBHOOK_BODIES.items():

        def receiver(
            body: model,  # type: ignore[valid-type]
            webhook_id: str = Header(
                description="Stable across retries and replays: de-duplicate on it."
            ),
            webhook_timestamp: str = Header(description="Unix seconds when this attempt was sent."),
            webhook_signature: str = Header(
                description="Space-separated v1,<base64 HMAC-SHA256 of id.timestamp.body>;"
                " two during a secret rotation."
            ),
        ) -> None:
            """Answer 2xx within 15 s; anything else is retried (410 Gone unsubscribes)."""

        app.webhooks.post(kind.value, summary=f"{kind.value}", status_code=200)(receiver)
