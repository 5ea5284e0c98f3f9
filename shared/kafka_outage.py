"""Why Kafka cannot be used now, said once in one line, and when to try again.

aiokafka reports a rejected password, an untrusted certificate and a broker that is
down alike: "Unable to bootstrap from [...]", after logging the real cause itself. So
before a service (re)connects, :func:`check_connection` opens one connection to each
bootstrap server with the very options the factory gives every client, and turns the
first real error into a sentence naming the setting to look at (:func:`explain`). A
service that cannot connect stays alive and not ready, and tries again with a growing
delay (:class:`Reconnection`), rather than dying into a restart loop of stack traces.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from shared.kafka_security import security_options
from shared.settings import LeadflowSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = 10_000


class KafkaUnreachable(KafkaConnectionError):  # type: ignore[misc]
    """No bootstrap server let us in; the message says why, in words an operator acts on."""


def _bootstrap_hosts(servers: str) -> list[tuple[str, int]]:
    hosts = []
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        hosts.append((host.strip("[]") or server.strip(), int(port or 9092)))
    return hosts


def explain(exc: BaseException, settings: LeadflowSettings, server: str) -> str:
    """One sentence: what went wrong connecting to ``server`` and which setting is involved."""
    mechanism = settings.kafka_sasl_mechanism
    protocol = settings.kafka_security_protocol
    if isinstance(exc, SaslAuthenticationFailed):
        user, _ = settings.kafka_sasl_credentials
        who = f"user {user!r}" if mechanism != "OAUTHBEARER" else "the OAUTHBEARER token"
        return f"Kafka rejected the SASL credentials for {who} ({mechanism}) at {server}: {exc}"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the Kafka broker at {server} does not offer LEADFLOW_KAFKA_SASL_MECHANISM="
            f"{mechanism}: {exc}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted(exc, settings, server)
    if isinstance(exc, ssl.SSLError):
        return (
            f"the TLS handshake with the Kafka broker at {server} failed ({exc.reason or exc}):"
            f" is it a TLS listener (LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol})?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing accepts connections at {server} (LEADFLOW_KAFKA_BOOTSTRAP_SERVERS)"
    if isinstance(exc, TimeoutError):
        return (
            f"the Kafka broker at {server} did not answer in {CONNECT_TIMEOUT_MS // 1000}s: "
            f"unreachable, or not a {protocol} listener (LEADFLOW_KAFKA_SECURITY_PROTOCOL)"
        )
    if isinstance(exc, KafkaConnectionError | IllegalSaslStateError):
        return (
            f"the Kafka broker at {server} closed the connection while it was being set up: "
            f"does LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} match its listener? ({exc})"
        )
    if isinstance(exc, OSError):
        return f"cannot connect to Kafka at {server}: {exc.strerror or exc}"
    return f"cannot connect to Kafka at {server}: {type(exc).__name__}: {exc}"


def _untrusted(exc: ssl.SSLCertVerificationError, settings: LeadflowSettings, server: str) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    if "hostname" in str(reason).lower() or "ip address mismatch" in str(reason).lower():
        return (
            f"the Kafka broker's certificate at {server} is not for that name ({reason}); "
            "connect by a name it has, or set LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME=false"
        )
    ca_file = settings.kafka_ssl_ca_file
    trusted_by = (
        f"LEADFLOW_KAFKA_SSL_CA_FILE={ca_file}"
        if ca_file is not None
        else "the system's CA certificates (set LEADFLOW_KAFKA_SSL_CA_FILE)"
    )
    return f"the Kafka broker's certificate at {server} is not trusted by {trusted_by}: {reason}"


async def check_connection(settings: LeadflowSettings) -> None:
    """Connect to the bootstrap servers as every client would; :class:`KafkaUnreachable`
    with the first server's reason if none lets us in."""
    options = security_options(settings)
    reasons: list[str] = []
    for host, port in _bootstrap_hosts(settings.kafka_bootstrap_servers):
        server = f"{host}:{port}"
        try:
            connection = await _connect(host, port, settings, options)
        except Exception as exc:  # OSError, ssl.SSLError, TimeoutError, any KafkaError
            reasons.append(explain(exc, settings, server))
        else:
            connection.close()
            return
    raise KafkaUnreachable(reasons[0] if reasons else "no Kafka bootstrap servers are set")


async def _connect(host: str, port: int, settings: LeadflowSettings, options: Any) -> Any:
    sasl = {key: value for key, value in options.items() if key.startswith("sasl_")}
    async with asyncio.timeout(CONNECT_TIMEOUT_MS / 1000):
        return await create_conn(
            host,
            port,
            client_id=f"{settings.kafka_client_id}-check",
            request_timeout_ms=CONNECT_TIMEOUT_MS,
            security_protocol=options["security_protocol"],
            ssl_context=options.get("ssl_context"),
            **sasl,
        )


class Reconnection:
    """The delay before the next try, growing while Kafka keeps failing us, and the log:
    the cause once when it appears or changes (and again every ``repeat_seconds`` while
    it lasts), and one line when it is over."""

    def __init__(
        self,
        what: str,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
        repeat_seconds: float = 300.0,
    ) -> None:
        self.what = what
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.repeat_seconds = repeat_seconds
        self.cause: str | None = None
        self.failures = 0
        """Failed tries since the last success."""
        self.delay = 0.0
        self.next_try = 0.0
        self._logged_at = 0.0

    def due(self) -> bool:
        """Whether the next try may be made now (never true during the delay)."""
        return time.monotonic() >= self.next_try

    def failed(self, cause: str) -> float:
        """Record a failure; the delay until the next try."""
        now = time.monotonic()
        if cause != self.cause or now - self._logged_at >= self.repeat_seconds:
            log.error("%s cannot use Kafka: %s; retrying with backoff", self.what, cause)
            self._logged_at = now
        self.cause = cause
        self.failures += 1
        self.delay = min(self.max_delay, self.delay * 2 if self.delay else self.first_delay)
        self.next_try = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        if self.cause is not None:
            log.warning("%s reaches Kafka again", self.what)
        self.cause = None
        self.failures = 0
        self.delay = 0.0
        self.next_try = 0.0
