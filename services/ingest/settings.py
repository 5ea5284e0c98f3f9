"""Settings of the ingest service (``LEADFLOW_*`` environment variables)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import LeadflowSettings


class IngestSettings(LeadflowSettings):
    port: int = Field(default=8001, description="HTTP port of ingest.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; when set, every POST needs one (X-API-Key).",
    )
    max_batch_events: int = Field(default=1000, ge=1, description="Most events in one batch.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body.")
    publish_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a request waits for Kafka before a 503."
    )
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After sent with a 503.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value
