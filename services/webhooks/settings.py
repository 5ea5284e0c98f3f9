"""Settings of the webhooks service (``LEADFLOW_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.webhooks.ssrf import parse_networks
from shared.settings import LeadflowSettings


class WebhooksSettings(LeadflowSettings):
    port: int = Field(default=8004, description="HTTP port of webhooks.")
    webhooks_database_url: str = Field(
        default="sqlite+aiosqlite:///./webhooks.db",
        description="SQLAlchemy async URL of the endpoints, messages and attempts.",
    )
    webhooks_group: str = Field(
        default="leadflow-webhooks", description="Consumer group of the webhooks service."
    )
    webhooks_consume: bool = Field(
        default=True, description="Run the Kafka consumer that turns records into messages."
    )
    webhooks_deliver: bool = Field(
        default=True, description="Run the delivery loop that posts the messages."
    )
    webhooks_batch_records: int = Field(
        default=500, ge=1, description="Most records turned into messages in one transaction."
    )
    webhooks_timeout_seconds: float = Field(
        default=15.0, gt=0, description="How long one delivery may take, connect to last byte."
    )
    webhooks_allow_http: bool = Field(
        default=False, description="Accept http:// endpoint URLs (https only when false)."
    )
    webhooks_allowed_networks: str = Field(
        default="",
        description="CIDR networks, comma separated, that endpoints may resolve to although"
        " private or loopback (e.g. 10.1.0.0/16 for an in-house CRM).",
    )
    webhooks_default_concurrency: int = Field(
        default=4, ge=1, le=100, description="Deliveries in flight to one endpoint at once."
    )
    webhooks_default_rate_limit: float | None = Field(
        default=None, gt=0, description="Deliveries per second to one endpoint; none when unset."
    )
    webhooks_max_in_flight: int = Field(
        default=200, ge=1, description="Deliveries in flight to all endpoints together."
    )
    webhooks_poll_seconds: float = Field(
        default=0.2, gt=0, description="How often the delivery loop looks for due messages."
    )
    webhooks_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a claimed message is held for this process before another may"
        " take it (extended while it is held; after a kill, how long until it is sent again).",
    )
    webhooks_secret_key: str | None = Field(
        default=None,
        description="Seals the endpoints' signing secrets in the database (a long random"
        " string, from a secret store); unset: stored unsealed, with a warning.",
    )
    webhooks_rotation_overlap_hours: float = Field(
        default=24, ge=0, description="How long a rotated-out secret still signs."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=5000, ge=0, description="How long SQLite waits for another writer's lock."
    )
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long /readyz waits for the database to answer."
    )

    @field_validator("webhooks_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def allowed_networks(self) -> list[str]:
        return parse_networks(self.webhooks_allowed_networks)
