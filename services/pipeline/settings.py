"""Settings of the pipeline service (``LEADFLOW_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from shared.settings import LeadflowSettings


class PipelineSettings(LeadflowSettings):
    port: int = Field(default=8003, description="HTTP port of pipeline.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///./leadflow.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///... or postgresql+asyncpg://...",
    )
    migrate_on_start: bool = Field(
        default=True,
        description=(
            "Upgrade the schema to head when the service starts. Safe with several replicas "
            "(PostgreSQL upgrades take an advisory lock); turn it off to run migrations as a "
            "separate deploy step (python -m services.pipeline.migrate)."
        ),
    )
    page_size_default: int = Field(default=100, ge=1, description="Page size when none is asked.")
    page_size_max: int = Field(default=1000, ge=1, description="Largest page a client may ask.")
    sqlite_busy_timeout_ms: int = Field(
        default=5000, ge=0, description="How long SQLite waits for another writer's lock."
    )
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long /readyz waits for the database to answer."
    )
    # For the Kafka consumer (consumer.py), named like scoring's.
    pipeline_group: str = Field(
        default="leadflow-pipeline", description="Consumer group of the pipeline writers."
    )
    pipeline_consume: bool = Field(
        default=True,
        description=(
            "Run the Kafka consumer that writes scores and stage changes. Off for replicas "
            "that only serve the REST API."
        ),
    )
    pipeline_batch_records: int = Field(
        default=500, ge=1, description="Most records written in one database transaction."
    )
    # The live stream of stage changes (stream.py, broadcast.py).
    stream_max_clients: int = Field(
        default=100,
        ge=1,
        description="Most open /v1/stream/stage-changes connections; beyond it a 503.",
    )
    stream_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between heartbeat comments on an open stream (keeps proxies open).",
    )
    stream_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=5,
        description=(
            "Seconds between the stream's polls of the stage-change feed: one query per "
            "interval, shared by every open stream."
        ),
    )
    stream_send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A stream client that takes longer than this to accept a write is dropped.",
    )

    # The dashboard's sign-in (dashboard.py, shared/sessions.py).
    dashboard_session_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description=(
            "Signs the dashboard's session cookies (32+ characters). Unset: a random one per "
            "process, so sessions end when it restarts and only this replica accepts them; "
            "give every replica the same one to share sessions."
        ),
    )
    dashboard_session_hours: float = Field(
        default=8.0,
        gt=0,
        le=24 * 30,
        description="How long a dashboard sign-in lasts (a token's own expiry ends it sooner).",
    )

    @model_validator(mode="after")
    def _default_fits_max(self) -> PipelineSettings:
        if self.page_size_default > self.page_size_max:
            raise ValueError("page_size_default must not exceed page_size_max")
        return self
