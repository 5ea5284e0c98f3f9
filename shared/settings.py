"""The one settings pattern: pydantic-settings classes read from ``LEADFLOW_*``.

Each service subclasses :class:`LeadflowSettings` in its own ``settings.py``
and adds only the fields it needs, so every variable has one name everywhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.topics import Topics


class LeadflowSettings(BaseSettings):
    """Settings every leadflow process shares."""

    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    topic_namespace: str = Field(
        default="leadflow", description="Prefix of every topic name (leadflow.events, ...)."
    )
    kafka_client_id: str = Field(default="leadflow", description="Kafka client.id prefix.")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none",
        description="Compression of the batches every leadflow producer writes.",
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field(
        default="text", description="json for log shippers, text for people."
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")

    # --- who may call the HTTP APIs (shared/auth.py) ---

    # --- how every client reaches Kafka: TLS and SASL (shared/kafka.py) ---

    # --- limits of the HTTP server (shared/server.py, shared/http_limits.py) ---
    # and what wraps every answer (shared/http_edge.py): CORS, the access log.
    http_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request line plus headers; beyond it: 431 and the connection closed.",
    )
    http_max_headers: int = Field(
        default=100, ge=8, description="Most headers in one request; beyond it: 431."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request's headers must arrive within this; else 408 and closed.",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A request's whole body must arrive within this once its headers did.",
    )
    http_keepalive_timeout_seconds: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections or requests in flight beyond which new ones get 503.",
    )
    http_backlog: int = Field(
        default=2048, ge=1, description="Connections the kernel queues before accept()."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins browsers may call from; none: CORS off.",
    )
    access_log: bool = Field(
        default=True, description="One line per request on the leadflow.access logger."
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    # --- operations: logs, metrics, running it ---

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace)
