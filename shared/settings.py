"""The one settings pattern: pydantic-settings classes read from ``LEADFLOW_*``.

Each service subclasses :class:`LeadflowSettings` in its own ``settings.py``
and adds only the fields it needs, so every variable has one name everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.kafka_security import SecurityProblem, check_security, read_secret
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

    # --- which ids name one lead (shared/lead_ids.py) ---
    lead_id_normalization: Literal["email", "none"] = Field(
        default="email",
        description="email: lead ids that are e-mail addresses are trimmed and case-folded"
        " (Ada@Example.com is ada@example.com); none: ids are only trimmed.",
    )

    # --- how every client reaches Kafka: TLS and SASL (shared/kafka.py) ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Kafka security.protocol: SASL_SSL for a managed Kafka.",
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(default=None, description="SASL mechanism; needed with SASL_SSL and SASL_PLAINTEXT.")
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL user (PLAIN, SCRAM): an API key on Confluent Cloud."
    )
    kafka_sasl_username_file: Path | None = Field(
        default=None, description="A file holding the SASL user, read at start (a mounted Secret)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (PLAIN, SCRAM): an API secret on Confluent Cloud."
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="A file holding the SASL password, read at start."
    )
    kafka_sasl_oauth_token_provider: str | None = Field(
        default=None,
        description="OAUTHBEARER: module:callable returning an aiokafka AbstractTokenProvider.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the broker's certificate is checked against."
    )
    kafka_ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS)."
    )
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted client key."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host."
    )
    events_retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="retention.ms of leadflow.events as `leadflow topics` creates it; -1: forever.",
    )
    _sasl_username: str | None = PrivateAttr(default=None)
    _sasl_password: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _kafka_security(self) -> LeadflowSettings:
        """Refuse a security setup that cannot work, at start, naming the variables."""
        try:
            self._sasl_username = read_secret(
                "KAFKA_SASL_USERNAME", self.kafka_sasl_username, self.kafka_sasl_username_file
            )
            password = self.kafka_sasl_password
            self._sasl_password = read_secret(
                "KAFKA_SASL_PASSWORD",
                None if password is None else password.get_secret_value(),
                self.kafka_sasl_password_file,
            )
            check_security(self)
        except SecurityProblem as problem:
            raise ValueError(str(problem)) from None
        return self

    @property
    def kafka_sasl_credentials(self) -> tuple[str | None, str | None]:
        """The SASL user and password, from the variables or the files named."""
        return self._sasl_username, self._sasl_password

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
        default=15.0,
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

    @model_validator(mode="after")
    def _jwt_complete(self) -> LeadflowSettings:
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("LEADFLOW_JWT_JWKS_URL needs LEADFLOW_JWT_ISSUER and _AUDIENCE")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace, events_retention_ms=self.events_retention_ms)
