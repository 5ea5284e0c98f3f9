"""What every service's HTTP app is wrapped in, installed by one call in each ``create_app``.

Outermost first: metrics and the access log (so they see every answer, the 500s
included), the security headers (on every answer, CORS preflights included), CORS
when origins are configured, then the catch-all for internal errors. FastAPI's own
422 is answered by the shared, capped handler.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.middleware.cors import CORSMiddleware

from shared.errors import InternalErrors, invalid_request
from shared.http_metrics import ObservedRequests
from shared.security_headers import SecurityHeaders
from shared.settings import LeadflowSettings

CORS_METHODS = ["GET", "POST", "DELETE"]
CORS_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "ce-specversion",
    "ce-id",
    "ce-type",
    "ce-source",
    "ce-subject",
    "ce-time",
]


def install_http_edge(app: FastAPI, settings: LeadflowSettings) -> None:
    """Wrap ``app`` in the shared middleware; call it once, in ``create_app``."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    # add_middleware puts each one outside those added before it.
    app.add_middleware(InternalErrors)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            max_age=600,
        )
    docs = [
        path for path in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if path
    ]
    app.add_middleware(SecurityHeaders, docs_paths=docs)
    app.add_middleware(ObservedRequests, routes=app.router.routes, log_access=settings.access_log)
