"""HTTP metrics of every service, and the middleware that also writes the access log.

Requests are labelled by route template (``/v1/leads/{lead_id:path}``), never by raw
path, and by a method from a fixed set, so a client cannot grow the number of series;
401, 403 and 429 show as statuses.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import access_log

REQUESTS = Counter(
    "leadflow_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "leadflow_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REFUSED = Counter(
    "leadflow_http_connections_refused_total",
    "Requests or connections the HTTP server refused before any app saw them",
    ["reason"],
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route of a request no route matched (a 404, or a 405 of no route)."""


@cache
def refused(reason: str) -> Counter:
    return REFUSED.labels(reason)


@cache
def _requests(route: str, method: str, status: int) -> Counter:
    return REQUESTS.labels(route, method, str(status))


@cache
def _duration(route: str, method: str) -> Histogram:
    return DURATION.labels(route, method)


class ObservedRequests:
    """Counts, times and logs each HTTP request once it is answered.

    Pure ASGI (a wrapped ``send``), not Starlette's BaseHTTPMiddleware, whose task and
    memory streams per request would cost more than ingest's fastest path.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], log_access: bool = True) -> None:
        self.app = app
        self.routes = routes
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = self.route_of(scope)
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        _requests(route, method, status).inc()
        _duration(route, method).observe(seconds)
        if self.log_access:
            request_id = scope.get("state", {}).get("request_id")
            access_log.log_request(scope, route, status, seconds, request_id)

    def route_of(self, scope: Scope) -> str:
        """The matched route's template: FastAPI's routes name themselves in the scope,
        Starlette's (the docs pages) are found by their endpoint."""
        route: Any = scope.get("route")
        if route is not None:
            return str(route.path)
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        for candidate in self.routes:
            if isinstance(candidate, Route) and candidate.endpoint is endpoint:
                return candidate.path
        return UNMATCHED
