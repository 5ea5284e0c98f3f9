"""The response shapes every service's REST API uses the same way.

A time is served as the Kafka records write it, so a client parses one format whether
it reads a topic or an API; an error is FastAPI's own ``{"detail": "..."}``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer

from shared.events import format_time

Timestamp = Annotated[
    AwareDatetime, PlainSerializer(format_time, return_type=str, when_used="json")
]
"""An aware time served as RFC 3339 with a Z, like the Kafka records."""


class Problem(BaseModel):
    """What is wrong with the request, or why it cannot be served now: FastAPI's
    ``{"detail": "..."}``."""

    detail: str = Field(min_length=1)
