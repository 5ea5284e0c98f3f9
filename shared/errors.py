"""Error answers every service shares: bounded 422s, and 500s that reveal nothing.

A 500's body says only that it happened and which request it was; the traceback goes to
the log under that request id, for whoever runs the service, and never to the client
(no stack, no SQL, no file path). A 422 lists at most :data:`MAX_REPORTED_ERRORS`
errors and then says how many more there were: one request must not buy an answer, or
CPU time, in proportion to how wrong it is.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("leadflow.errors")

MAX_REPORTED_ERRORS = 100
"""Most field errors one 422 lists; validation stops soon after, where it can."""

TOO_MANY_ERRORS = "too_many_errors"


def unreported(count: int, where: str = "body", unchecked: str | None = None) -> dict[str, Any]:
    """The last entry of a cut list, in the shape of the others: ``count`` more errors not
    shown, and what was not even checked."""
    parts = [f"{count} more errors not shown"] if count else []
    parts += [unchecked] if unchecked else []
    return {"loc": [where], "msg": "; ".join(parts), "type": TOO_MANY_ERRORS}


def capped(
    errors: Sequence[dict[str, Any]], limit: int = MAX_REPORTED_ERRORS
) -> list[dict[str, Any]]:
    """``errors``, or their first ``limit`` and an entry saying how many were left out."""
    if len(errors) <= limit:
        return list(errors)
    where = str(errors[0]["loc"][0]) if errors[0].get("loc") else "body"
    return [*errors[:limit], unreported(len(errors) - limit, where)]


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 (query, path, body validated from the route's declaration), capped."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": jsonable_encoder(capped(exc.errors()))}, 422)


def invalid_query(field: str, value: str | None, reason: str) -> RequestValidationError:
    """A 422 naming the query parameter, shaped like FastAPI's own validation errors: for
    what a route can only check once it has every parameter (a cursor, a range)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": reason, "input": value}]
    )


def new_request_id() -> str:
    return secrets.token_hex(8)


class InternalErrors:
    """The last word on an exception no handler took: a 500 without internals, logged.

    Pure ASGI, inside the other middleware, so the 500 is counted, logged and carries
    the security headers like any answer. A client that went away mid-request is no
    error of ours: nothing is answered, and nothing but a debug line is logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except ClientDisconnect:
            log.debug("client went away during %s %s", scope["method"], scope["path"])
        except Exception:
            request_id = new_request_id()
            scope.setdefault("state", {})["request_id"] = request_id
            log.exception(
                "internal error in %s %s (request_id=%s)",
                scope["method"],
                scope["path"],
                request_id,
                extra={"request_id": request_id},
            )
            if not started:
                response = JSONResponse(
                    {"detail": "internal error", "request_id": request_id},
                    500,
                    headers={"X-Request-ID": request_id},
                )
                await response(scope, receive, send)
