"""The one settings pattern: pydantic-settings classes read from ``LEADFLOW_*``.

Each service subclasses :class:`LeadflowSettings` in its own ``settings.py``
and adds only the fields it needs, so every variable has one name everywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # --- limits of the HTTP server (shared/server.py) ---

    # --- operations: logs, metrics, running it ---

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace)
