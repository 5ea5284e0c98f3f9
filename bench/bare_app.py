"""The raw limit of an HTTP endpoint here: bare Starlette that parses the body and answers 202.

Served by uvicorn exactly as :func:`shared.server.serve` serves the services (same loop,
HTTP protocol and limits), so the only difference to ``POST /v1/events`` is what
leadflow does per request: validation, Kafka, metrics, the middleware, the access log.
"""

from __future__ import annotations

import os

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.server import server_config
from shared.settings import LeadflowSettings


async def post_event(request: Request) -> Response:
    event = orjson.loads(await request.body())
    body = orjson.dumps({"accepted": 1, "event_ids": [event.get("event_id")]})
    return Response(body, status_code=202, media_type="application/json")


async def ready(_: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/events", post_event, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
)


def main() -> None:
    port = int(os.environ["LEADFLOW_PORT"])
    uvicorn.Server(server_config(app, LeadflowSettings(), host="127.0.0.1", port=port)).run()


if __name__ == "__main__":
    main()
