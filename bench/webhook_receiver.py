"""Webhook receivers on loopback: one aiohttp process, one path per endpoint.

Each request is answered 204 at once and recorded as ``(path, webhook-id, time)``;
signatures are not checked here, in the timed path, but every n-th request is kept
whole (headers and body) and the bench verifies those with ``standardwebhooks``
after the run. The clock is the wall clock, the one the bench stamps its commits
with: both processes run on this machine.
"""

from __future__ import annotations

import os
import time

import orjson
import uvloop
from aiohttp import web

SAMPLE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_SAMPLES = 5000


class Receivers:
    def __init__(self, sample_every: int) -> None:
        self.sample_every = sample_every
        self.arrivals: list[tuple[str, str, float]] = []
        self.samples: list[dict[str, object]] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.match_info["name"]
        webhook_id = request.headers.get("webhook-id", "")
        self.arrivals.append((path, webhook_id, time.time()))
        if len(self.arrivals) % self.sample_every == 0 and len(self.samples) < MAX_SAMPLES:
            headers = {name: request.headers.get(name, "") for name in SAMPLE_HEADERS}
            self.samples.append({"path": path, "headers": headers, "body": body.decode()})
        return web.Response(status=204)

    async def count(self, _: web.Request) -> web.Response:
        return web.Response(body=str(len(self.arrivals)).encode())

    async def collected(self, _: web.Request) -> web.Response:
        """Everything since the last reset, then forgotten: one run's requests."""
        document = {"arrivals": self.arrivals, "samples": self.samples}
        self.arrivals, self.samples = [], []
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async def ready(self, _: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def build_app(sample_every: int) -> web.Application:
    receivers = Receivers(sample_every)
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/hook/{name}", receivers.hook)
    app.router.add_get("/count", receivers.count)
    app.router.add_post("/collect", receivers.collected)
    app.router.add_get("/readyz", receivers.ready)
    return app


def main() -> None:
    port = int(os.environ["LEADFLOW_PORT"])
    sample_every = int(os.environ.get("BENCH_SAMPLE_EVERY", "50"))
    uvloop.install()
    web.run_app(build_app(sample_every), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
