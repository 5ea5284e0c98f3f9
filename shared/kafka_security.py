"""How every leadflow client authenticates to Kafka and checks it: TLS and SASL options.

Pure logic: the settings in, aiokafka's keyword arguments out (:func:`security_options`),
and the checks that refuse a setup that cannot work before any connection is tried
(:func:`check_security`), so a mistake is named at start instead of surfacing as a
connection that keeps failing. :mod:`shared.kafka` applies the options to every
producer, consumer and admin client.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

if TYPE_CHECKING:
    from shared.settings import LeadflowSettings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})


class SecurityProblem(Exception):
    """The Kafka security settings cannot work; the message names the variables."""


def read_secret(name: str, value: str | None, file: Path | None) -> str | None:
    """``value``, or the content of ``file`` (a mounted Kubernetes Secret), not both.

    A trailing newline is dropped: ``echo secret > file`` and most editors add one, and
    no Kafka credential ends with one.
    """
    if file is None:
        return value
    if value is not None:
        raise SecurityProblem(f"set LEADFLOW_{name} or LEADFLOW_{name}_FILE, not both")
    try:
        return file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise SecurityProblem(
            f"LEADFLOW_{name}_FILE={file} cannot be read: {exc.strerror or exc}"
        ) from None


def check_security(settings: LeadflowSettings) -> None:
    """Raise :class:`SecurityProblem` for a combination that cannot connect."""
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if protocol in SASL_PROTOCOLS:
        _check_sasl(settings)
    elif mechanism is not None:
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SASL_MECHANISM={mechanism} needs LEADFLOW_KAFKA_SECURITY_PROTOCOL="
            f"SASL_SSL (or SASL_PLAINTEXT), not {protocol}"
        )
    files = {
        "KAFKA_SSL_CA_FILE": settings.kafka_ssl_ca_file,
        "KAFKA_SSL_CERT_FILE": settings.kafka_ssl_cert_file,
        "KAFKA_SSL_KEY_FILE": settings.kafka_ssl_key_file,
    }
    given = {name: path for name, path in files.items() if path is not None}
    if given and protocol not in TLS_PROTOCOLS:
        names = ", ".join(f"LEADFLOW_{name}" for name in given)
        raise SecurityProblem(
            f"{names} only apply to LEADFLOW_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, "
            f"not {protocol}"
        )
    for name, path in given.items():
        if not path.is_file():
            raise SecurityProblem(f"LEADFLOW_{name}={path}: no such file")
    if settings.kafka_ssl_key_file is not None and settings.kafka_ssl_cert_file is None:
        raise SecurityProblem("LEADFLOW_KAFKA_SSL_KEY_FILE needs LEADFLOW_KAFKA_SSL_CERT_FILE")


def _check_sasl(settings: LeadflowSettings) -> None:
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if mechanism is None:
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs LEADFLOW_KAFKA_SASL_MECHANISM "
            "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
        )
    if mechanism == "OAUTHBEARER":
        if settings.kafka_sasl_oauth_token_provider is None:
            raise SecurityProblem(
                "LEADFLOW_KAFKA_SASL_MECHANISM=OAUTHBEARER needs "
                "LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER (module:callable)"
            )
        load_token_provider_factory(settings.kafka_sasl_oauth_token_provider)
        return
    username, password = settings.kafka_sasl_credentials
    missing = [
        f"LEADFLOW_KAFKA_SASL_{name} (or LEADFLOW_KAFKA_SASL_{name}_FILE)"
        for name, value in (("USERNAME", username), ("PASSWORD", password))
        if not value
    ]
    if missing:
        raise SecurityProblem(f"SASL {mechanism} needs {' and '.join(missing)}")


def load_token_provider_factory(spec: str) -> Any:
    """The callable named ``module:callable``; a clear error when it is not there."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec!r}: expected module:callable"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec!r}: cannot import {module_name} "
            f"({exc})"
        ) from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec!r}: {module_name} has no "
            f"callable {attribute}"
        )
    return target


@cache
def token_provider(spec: str) -> AbstractTokenProvider:
    """One provider per process for all clients: providers cache and refresh the token."""
    provider = load_token_provider_factory(spec)()
    if not isinstance(provider, AbstractTokenProvider):
        raise SecurityProblem(
            f"LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER={spec!r} returned "
            f"{type(provider).__name__}, not an aiokafka AbstractTokenProvider"
        )
    return provider


def on_uvloop() -> bool:
    """Whether the running event loop is uvloop's (uvicorn picks it when it is installed)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return type(loop).__module__.startswith("uvloop")


def ssl_context(settings: LeadflowSettings, *, tls13: bool = True) -> ssl.SSLContext:
    """The system's CAs, or only ``LEADFLOW_KAFKA_SSL_CA_FILE``; a client certificate if set.

    ``tls13=False`` caps the protocol at TLS 1.2: on uvloop, closing a TLS 1.3 connection
    to a Kafka broker waits out uvloop's whole TLS shutdown timeout, 30 seconds (seen with
    uvloop 0.23 and Kafka 4.1 on Java 17; the asyncio loop and TLS 1.2 close at once), and
    aiokafka awaits every close: each changelog restore, so each partition scoring takes,
    stalled that long.
    """
    key_password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_ca_file,
        certfile=settings.kafka_ssl_cert_file,
        keyfile=settings.kafka_ssl_key_file,
        password=None if key_password is None else key_password.get_secret_value(),
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def security_options(settings: LeadflowSettings) -> dict[str, Any]:
    """The keyword arguments that every aiokafka client gets for TLS and SASL."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings, tls13=not on_uvloop())
    if protocol in SASL_PROTOCOLS:
        mechanism = settings.kafka_sasl_mechanism
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            assert settings.kafka_sasl_oauth_token_provider is not None  # checked at start
            options["sasl_oauth_token_provider"] = token_provider(
                settings.kafka_sasl_oauth_token_provider
            )
        else:
            username, password = settings.kafka_sasl_credentials
            options["sasl_plain_username"] = username
            options["sasl_plain_password"] = password
    return options
