"""What ``leadflow import`` reads from ``LEADFLOW_*``: where ingest and the pipeline are,
the key it sends, and the horizon scoring de-duplicates within."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import LeadflowSettings


class ImportSettings(LeadflowSettings):
    ingest_url: str = Field(
        default="http://127.0.0.1:8001", description="Base URL of ingest, for the import."
    )
    pipeline_url: str = Field(
        default="http://127.0.0.1:8003", description="Base URL of the pipeline, for the import."
    )
    import_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the import: events:write (and crm:write for CRM events)"
        " on ingest, leads:read on the pipeline.",
    )
    dedup_horizon_days: float = Field(
        default=30,
        gt=0,
        description="How long (event time) a lead remembers event ids: the value scoring runs"
        " with (the same variable).",
    )
