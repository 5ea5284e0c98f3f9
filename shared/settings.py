"""The one settings pattern: pydantic-settings classes read from ``LEADFLOW_*``.

Each service subclasses :class:`LeadflowSettings` in its own ``settings.py``
and adds only the fields it needs, so every variable has one name everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    auth: Literal["enabled", "disabled"] = Field(
        default="enabled",
        description="disabled: serve without authentication even off loopback (a warning"
        " at every start).",
    )
    api_keys: str = Field(
        default="",
        description="API key lines name:scope,scope:sha256hex, separated by newlines or ';'"
        " (leadflow keys create prints them).",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file of API key lines, one per line (a mounted secret)."
    )
    jwt_jwks_url: str | None = Field(
        default=None, description="JWKS URL of the identity provider whose JWTs are accepted."
    )
    jwt_issuer: str | None = Field(default=None, description="The iss a JWT must carry.")
    jwt_audience: str | None = Field(default=None, description="The aud a JWT must carry.")
    jwt_scope_claim: str = Field(
        default="scope",
        description="The claim holding a JWT's scopes: a space-separated string or a list.",
    )
    jwt_leeway_seconds: float = Field(
        default=30, ge=0, description="Clock skew allowed on a JWT's exp and nbf."
    )
    jwt_jwks_cache_seconds: float = Field(
        default=300, gt=0, description="How long the fetched key set is used before refetching."
    )
    jwt_jwks_refresh_min_seconds: float = Field(
        default=5,
        ge=0,
        description="Least time between two fetches of the key set for unknown key ids.",
    )
    metrics_auth: Literal["open", "protected"] = Field(
        default="open", description="protected: /metrics needs the admin scope."
    )
    docs: Literal["on", "off"] = Field(
        default="on", description="off: no /docs, /redoc or /openapi.json."
    )

    # --- how every client reaches Kafka: TLS and SASL (shared/kafka.py) ---

    # --- limits of the HTTP server (shared/server.py) ---

    # --- operations: logs, metrics, running it ---

    @model_validator(mode="after")
    def _jwt_complete(self) -> LeadflowSettings:
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("LEADFLOW_JWT_JWKS_URL needs LEADFLOW_JWT_ISSUER and _AUDIENCE")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace)
