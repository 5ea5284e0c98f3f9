"""A database that is down or restarting is a 503 to retry, not a 500 to debug.

Every service with a database answers its outages alike: the same status, body and
``Retry-After``, and the same line in its OpenAPI document (:data:`DATABASE_DOWN`).
Errors that are not about reaching the database (a bug in a query) stay 500s.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

log = logging.getLogger(__name__)

DATABASE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "The database does not answer; retry after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}
"""The documented 503, for an app's or a router's ``responses``."""


async def database_unavailable(_: Request, exc: Exception) -> Response:
    """The 503 for an error reaching the database; any other error is raised again."""
    reaching = isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not reaching:
        raise exc
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "the database is unavailable; retry later"},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def install_database_outage(app: FastAPI) -> None:
    """Answer ``app``'s database errors with :func:`database_unavailable`."""
    app.add_exception_handler(SQLAlchemyError, database_unavailable)
    app.add_exception_handler(OSError, database_unavailable)
