"""Ending a service that cannot start, with the reason in one line.

Apart from :mod:`shared.server` because a service may have to read its settings before the
HTTP stack (and the metrics it creates at import) is loaded: scoring decides by its
settings how its metrics are kept (:mod:`services.scoring.processes`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from shared.auth import AuthConfigurationError


@contextmanager
def refusing_to_start(service: str) -> Iterator[None]:
    """Settings or an auth configuration that cannot work end the process with one line
    saying why and exit status 2, not a traceback: what an orchestrator's log shows first
    is then the reason, and the process is not restarted into the same mistake quietly."""
    try:
        yield
    except ValidationError as exc:
        sys.stderr.write(f"leadflow {service}: {settings_errors(exc)}\n")
        raise SystemExit(2) from None
    except AuthConfigurationError as exc:
        sys.stderr.write(f"leadflow {service}: {exc}\n")
        raise SystemExit(2) from None


def settings_errors(exc: ValidationError) -> str:
    """Each error by its variable and reason, never the values: pydantic's own message
    quotes the input, which holds passwords and keys."""
    reasons = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        variable = f"LEADFLOW_{str(error['loc'][0]).upper()}: " if error["loc"] else ""
        reasons.append(variable + error["msg"].removeprefix("Value error, "))
    return "invalid settings: " + "; ".join(reasons)
