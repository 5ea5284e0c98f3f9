"""The access log: one line per request on ``leadflow.access``, who called what and how it went.

Who is the key's name (``request.state.principal.name``, set by the authentication
module), never the key, nor any header. In JSON logs every part is its own field.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

ACCESS = logging.getLogger("leadflow.access")


def principal_name(scope: MutableMapping[str, Any]) -> str | None:
    """The name of who called, if the request was authenticated."""
    state = scope.get("state")
    principal = state.get("principal") if isinstance(state, dict) else None
    name = getattr(principal, "name", None)
    return name if isinstance(name, str) else None


def client_address(scope: MutableMapping[str, Any]) -> str:
    client = scope.get("client")
    if not client:
        return "-"
    host, port = client
    return f"{host}:{port}"


def log_request(
    scope: MutableMapping[str, Any], route: str, status: int, seconds: float, request_id: str | None
) -> None:
    """One line for a request that was answered (or abandoned, with status 0)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 3)
    client = client_address(scope)
    key = principal_name(scope)
    method = scope.get("method", "-")
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "client": client,
        "key_name": key,
    }
    if request_id is not None:
        fields["request_id"] = request_id
    ACCESS.info(
        "%s %s %d %.1fms client=%s key=%s",
        method,
        route,
        status,
        duration_ms,
        client,
        key or "-",
        extra=fields,
    )
