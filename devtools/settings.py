"""What the developer commands (``leadflow run``, ``kafka``, ``demo``) read from ``LEADFLOW_*``.

Settings of the local system, not of a service: a service has one ``LEADFLOW_PORT``,
which ``leadflow run`` sets per service from these (see :func:`devtools.system.child_environment`).
"""

from __future__ import annotations

from pydantic import Field

from shared.settings import LeadflowSettings


class DeveloperSettings(LeadflowSettings):
    kafka_port: int = Field(default=9092, ge=1, le=65535, description="Local broker's port.")
    ingest_port: int = Field(default=8001, ge=1, le=65535, description="ingest under run.")
    scoring_port: int = Field(default=8002, ge=1, le=65535, description="scoring under run.")
    pipeline_port: int = Field(default=8003, ge=1, le=65535, description="pipeline under run.")
    webhooks_port: int = Field(default=8004, ge=1, le=65535, description="webhooks under run.")
    demo_api_key: str | None = Field(
        default=None, description="Key the demo sends as a bearer token to ingest and pipeline."
    )
