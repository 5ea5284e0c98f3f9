"""Real HTTP servers on loopback for tests: uvicorn in a thread, on a free port.

Served with the services' own configuration (:func:`shared.server.server_config`), so
tests exercise the same protocol, limits and timeouts as production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from devtools.broker import free_port
from shared.server import server_config
from shared.settings import LeadflowSettings


@contextmanager
def serving(
    app: FastAPI, timeout: float = 20.0, settings: LeadflowSettings | None = None
) -> Iterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL.

    ``settings``: the HTTP server's limits (defaults: the services' defaults).
    """
    port = free_port()
    config = server_config(app, settings or LeadflowSettings(), host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
