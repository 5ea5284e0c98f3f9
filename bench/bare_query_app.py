"""The raw limit of a REST read here: bare Starlette answering the reads with asyncpg.

``GET /v1/leads?min_score=[&stage=]`` runs the listing's SQL by stored total (one index
range, as ``bench/query.py``'s SQL side does) and ``GET /v1/leads/{id}`` the lookup, each a
prepared statement on a pool, the rows encoded with orjson. Served by uvicorn exactly as
:func:`shared.server.serve` serves the services, so the difference to pipeline's routes is
what leadflow does per request beyond the SQL: SQLAlchemy, pydantic, valuing the leads at
the request's time, the middleware, metrics, the access log.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.query import GET_SQL, LIST_SQL, PAGE, STAGE_LIST_SQL
from shared.server import server_config
from shared.settings import LeadflowSettings

POOL: dict[str, Any] = {}


def _encode(record: Any) -> dict[str, Any]:
    return dict(record.items())


async def list_leads(request: Request) -> Response:
    min_score = float(request.query_params.get("min_score", "-inf"))
    stage = request.query_params.get("stage")
    async with POOL["pool"].acquire() as connection:
        if stage is None:
            rows = await connection.fetch(LIST_SQL, min_score, PAGE + 1)
        else:
            rows = await connection.fetch(STAGE_LIST_SQL, min_score, PAGE + 1, stage)
    items = [_encode(row) for row in rows[:PAGE]]
    body = orjson.dumps({"items": items, "next_cursor": None}, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")


async def get_lead(request: Request) -> Response:
    async with POOL["pool"].acquire() as connection:
        row = await connection.fetchrow(GET_SQL, request.path_params["lead_id"])
    if row is None:
        return Response(b'{"detail":"unknown"}', status_code=404, media_type="application/json")
    return Response(
        orjson.dumps(_encode(row), option=orjson.OPT_UTC_Z), media_type="application/json"
    )


async def ready(_: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    POOL["pool"] = await asyncpg.create_pool(
        os.environ["BENCH_POSTGRES_URL"], min_size=2, max_size=10
    )
    yield
    await POOL["pool"].close()


app = Starlette(
    routes=[
        Route("/v1/leads", list_leads, methods=["GET"]),
        Route("/v1/leads/{lead_id:path}", get_lead, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)


def main() -> None:
    port = int(os.environ["LEADFLOW_PORT"])
    uvicorn.Server(server_config(app, LeadflowSettings(), host="127.0.0.1", port=port)).run()


if __name__ == "__main__":
    main()
