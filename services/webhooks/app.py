"""webhooks' HTTP surface: endpoints, their messages and replay (scope admin), the probes.

The work is in two loops the lifespan starts: the Kafka consumer stores
messages (consumer.py), the deliverer posts them (delivery.py). The OpenAPI
document's ``webhooks`` section describes what a subscribed endpoint receives.
"""

# No ``from __future__ import annotations``: the webhooks section builds each receiver
# signature from a local model, which FastAPI can only resolve when evaluated.

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Header

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
from shared.database import Database
from shared.database_outage import DATABASE_DOWN, install_database_outage
from shared.http_edge import install_http_edge
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
        # Not a BackgroundLoop: delivery needs no Kafka, only the database.
        deliverer = Deliverer(settings, database, box, clock)
        delivering = _run(deliverer) if settings.webhooks_deliver else None
        delivers = deliverer if settings.webhooks_deliver else None
        wake = delivers.wake if delivers is not None else (lambda: None)
        consumer = BackgroundLoop(
            "webhooks-consumer",
            lambda: WebhooksConsumer(settings, database, clock, delivers),
            settings,
        )
        app.state.consumer, app.state.delivering = consumer, delivering
        policy = Policy.of(settings.webhooks_allow_http, settings.allowed_networks)
        app.state.service = Service(
            settings, database, box, policy, clock, deliverer.delivery, wake
        )
        if settings.webhooks_consume:
            consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            deliverer.stop()
            if delivering is not None:
                await asyncio.gather(delivering, return_exceptions=True)
            else:
                await deliverer.delivery.close()
            del app.state.service
            await database.dispose()

    app = FastAPI(
        title="leadflow webhooks",
        version="1",
        summary="Signed webhooks to CRMs: subscriptions, deliveries, replay.",
        lifespan=lifespan,
        responses=DATABASE_DOWN,
    )
    install_database_outage(app)
    # Onto the app's own route table, as the probes are (shared/probes.py): this FastAPI
    # matches an included router by walking its routes on every request that reaches it.
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
        delivering: asyncio.Task[None] | None = app.state.delivering
        if delivering is not None:
            checks["deliverer"] = not delivering.done()
        return checks

    def alive() -> bool:
        consumer: BackgroundLoop[WebhooksConsumer] | None = getattr(app.state, "consumer", None)
        delivering: asyncio.Task[None] | None = getattr(app.state, "delivering", None)
        return (consumer is None or consumer.alive()) and (
            delivering is None or not delivering.done()
        )

    install_probes(app, readiness, alive)
    install_http_edge(app, settings)
    install_auth(app, settings)  # after every route: it documents their security
    return app


def _run(deliverer: Deliverer) -> asyncio.Task[None]:
    """The delivery loop as a task; a crash is logged when it happens (and fails /healthz)."""
    task = asyncio.create_task(deliverer.run(), name="webhooks-deliverer")

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("webhooks-deliverer stopped", exc_info=done.exception())

    task.add_done_callback(report)
    return task


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
