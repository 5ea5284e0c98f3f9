"""Settings of the ingest service (``LEADFLOW_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from services.ingest.segment_events import load_event_map
from shared.settings import LeadflowSettings


class IngestSettings(LeadflowSettings):
    port: int = Field(default=8001, description="HTTP port of ingest.")
    max_batch_events: int = Field(default=1000, ge=1, description="Most events in one batch.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body.")
    publish_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a request waits for Kafka before a 503."
    )
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After sent with a 503.")
    rate_limit_per_second: float = Field(
        default=0,
        ge=0,
        description="Requests per second each key (or token subject) may post; 0: no limit.",
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        description="Requests a key may post at once above its rate; 0: the rate, rounded up.",
    )
    segment_events_file: Path | None = Field(
        default=None,
        description="YAML mapping Segment track event names to event types; unset: the"
        " shipped services/ingest/segment_events.yaml.",
    )

    @field_validator("segment_events_file")
    @classmethod
    def _usable_event_map(cls, value: Path | None) -> Path | None:
        load_event_map(value)  # refused at start, with the entry that is wrong
        return value
