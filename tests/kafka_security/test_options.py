"""From the security settings to aiokafka's keyword arguments, and the setups refused at start.

No broker: what every client of every service gets is decided here, so it is checked here.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import ValidationError

from shared.kafka import make_admin, make_consumer, make_producer
from shared.kafka_outage import explain
from shared.kafka_security import security_options
from shared.settings import LeadflowSettings


class StaticToken(AbstractTokenProvider):  # type: ignore[misc]
    async def token(self) -> str:
        return "a-token"


def token_provider() -> StaticToken:
    """Named by LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER in the tests below."""
    return StaticToken()


def not_a_provider() -> object:
    return object()


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def settings(**fields: Any) -> LeadflowSettings:
    return LeadflowSettings(**fields)


def test_plaintext_by_default_with_nothing_else() -> None:
    assert security_options(settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_gives_credentials_and_a_verifying_context(ca_file: Path) -> None:
    options = security_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="alice",
            kafka_sasl_password="alice-secret",
            kafka_ssl_ca_file=ca_file,
        )
    )
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "alice-secret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1  # only the CA file, not the system's


def test_hostname_checking_can_be_turned_off_but_not_verification() -> None:
    options = security_options(
        settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    )
    context = options["ssl_context"]
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_REQUIRED)
    assert "sasl_mechanism" not in options


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path, ca_file: Path) -> None:
    client = trustme.CA().issue_cert("leadflow@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    options = security_options(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_ca_file=ca_file,
            kafka_ssl_cert_file=cert,
            kafka_ssl_key_file=key,
        )
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_credentials_are_read_from_files_once_at_start(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("svc-key\n")
    (tmp_path / "password").write_text("s3cret\n")
    loaded = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username_file=tmp_path / "user",
        kafka_sasl_password_file=tmp_path / "password",
    )
    (tmp_path / "password").write_text("changed later")
    options = security_options(loaded)
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc-key", "s3cret")
    # settings copied the way the tests and services copy them keep working
    copied = LeadflowSettings(**loaded.model_dump())
    assert copied.kafka_sasl_credentials == ("svc-key", "changed later")


def test_the_password_is_not_shown_in_the_settings() -> None:
    loaded = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="hunter2",
    )
    assert "hunter2" not in repr(loaded)
    assert "hunter2" not in loaded.model_dump_json()


def test_oauthbearer_gets_one_provider_from_the_hook() -> None:
    hook = f"{__name__}:token_provider"
    first = security_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_sasl_oauth_token_provider=hook,
        )
    )
    second = security_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_sasl_oauth_token_provider=hook,
        )
    )
    assert isinstance(first["sasl_oauth_token_provider"], StaticToken)
    assert first["sasl_oauth_token_provider"] is second["sasl_oauth_token_provider"]
    assert "sasl_plain_password" not in first


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "LEADFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LEADFLOW_KAFKA_SASL_MECHANISM",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256"},
            "SASL SCRAM-SHA-256 needs LEADFLOW_KAFKA_SASL_USERNAME (or LEADFLOW_KAFKA_SASL_"
            "USERNAME_FILE) and LEADFLOW_KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "SASL PLAIN needs LEADFLOW_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_mechanism": "PLAIN"},
            "LEADFLOW_KAFKA_SASL_MECHANISM=PLAIN needs LEADFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": Path("/nonexistent/ca.pem")},
            "LEADFLOW_KAFKA_SSL_CA_FILE=/nonexistent/ca.pem: no such file",
        ),
        (
            {"kafka_ssl_ca_file": Path(__file__)},
            "LEADFLOW_KAFKA_SSL_CA_FILE only apply to LEADFLOW_KAFKA_SECURITY_PROTOCOL=SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_file": Path(__file__)},
            "LEADFLOW_KAFKA_SSL_KEY_FILE needs LEADFLOW_KAFKA_SSL_CERT_FILE",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_sasl_password_file": Path(__file__),
            },
            "set LEADFLOW_KAFKA_SASL_PASSWORD or LEADFLOW_KAFKA_SASL_PASSWORD_FILE, not both",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
                "kafka_sasl_password_file": Path("/nonexistent/password"),
            },
            "LEADFLOW_KAFKA_SASL_PASSWORD_FILE=/nonexistent/password cannot be read",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "OAUTHBEARER needs LEADFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER (module:callable)",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "OAUTHBEARER",
                "kafka_sasl_oauth_token_provider": "no_such_module_here:make",
            },
            "cannot import no_such_module_here",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "OAUTHBEARER",
                "kafka_sasl_oauth_token_provider": f"{__name__}:missing",
            },
            f"{__name__} has no callable missing",
        ),
    ],
)
def test_setups_that_cannot_work_are_refused_naming_the_variables(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(**fields)
    assert message in str(refused.value)


def test_a_hook_returning_something_else_is_refused_when_clients_are_made() -> None:
    loaded = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=f"{__name__}:not_a_provider",
    )
    with pytest.raises(Exception, match="not an aiokafka AbstractTokenProvider"):
        security_options(loaded)


async def test_every_client_of_the_factory_gets_the_options(ca_file: Path) -> None:
    loaded = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="alice",
        kafka_sasl_password="alice-secret",
        kafka_ssl_ca_file=ca_file,
    )
    producer = make_producer(loaded, name="p")
    consumer = make_consumer(loaded, name="c", group_id=None)
    admin = make_admin(loaded, name="a")
    try:
        clients = [producer.client, consumer._client, admin._client]
        for client in clients:
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "alice"
            assert isinstance(client._ssl_context, ssl.SSLContext)
        assert isinstance(admin, AIOKafkaAdminClient)
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


def test_causes_are_explained_in_words_naming_the_setting(ca_file: Path) -> None:
    loaded = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="alice",
        kafka_sasl_password="wrong",
        kafka_ssl_ca_file=ca_file,
    )
    server = "127.0.0.1:9093"
    rejected = explain(SaslAuthenticationFailed("invalid credentials"), loaded, server)
    assert rejected.startswith("Kafka rejected the SASL credentials for user 'alice' (SCRAM-SHA")
    assert "wrong" not in rejected  # never the password
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    assert explain(untrusted, loaded, server) == (
        f"the Kafka broker's certificate at {server} is not trusted by "
        f"LEADFLOW_KAFKA_SSL_CA_FILE={ca_file}: unable to get local issuer certificate"
    )
    assert "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS" in explain(ConnectionRefusedError(), loaded, server)
    closed = explain(KafkaConnectionError("Connection at x closed"), loaded, server)
    assert "LEADFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in closed


def test_on_uvloop_tls_stops_at_1_2_where_closing_1_3_stalls(ca_file: Path) -> None:
    loaded = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=ca_file)

    async def context_made() -> ssl.SSLContext:
        made: ssl.SSLContext = security_options(loaded)["ssl_context"]
        return made

    assert uvloop.run(context_made()).maximum_version == ssl.TLSVersion.TLSv1_2
    assert asyncio.run(context_made()).maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
