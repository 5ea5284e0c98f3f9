"""The raw limit of ``POST /v1/events`` with its Kafka write: bare Starlette and aiokafka.

:mod:`bench.bare_app` plus what ingest must do before its 202: the body goes to
``leadflow.events`` with ingest's producer (:func:`shared.kafka.make_producer`: idempotent,
``acks=all``, ingest's ``linger_ms`` of :data:`services.ingest.publisher.LINGER_MS`),
keyed by the lead id, and the answer waits for the broker's acknowledgement. Served by
uvicorn as the services are; configured by the same ``LEADFLOW_*`` variables as ingest.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.ingest.publisher import LINGER_MS
from shared.kafka import encode_key, make_producer
from shared.server import server_config
from shared.settings import LeadflowSettings

SETTINGS = LeadflowSettings()
TOPIC = SETTINGS.topics.events


async def post_event(request: Request) -> Response:
    body = await request.body()
    event = orjson.loads(body)
    producer: AIOKafkaProducer = request.app.state.producer
    await (await producer.send(TOPIC, body, key=encode_key(event["lead_id"])))
    answer = orjson.dumps({"accepted": 1, "event_ids": [event.get("event_id")]})
    return Response(answer, status_code=202, media_type="application/json")


async def ready(_: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    producer = make_producer(SETTINGS, name="bare-ingest", linger_ms=LINGER_MS)
    await producer.start()
    app.state.producer = producer
    try:
        yield
    finally:
        await producer.stop()


app = Starlette(
    routes=[
        Route("/v1/events", post_event, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)


def main() -> None:
    port = int(os.environ["LEADFLOW_PORT"])
    uvicorn.Server(server_config(app, SETTINGS, host="127.0.0.1", port=port)).run()


if __name__ == "__main__":
    main()
