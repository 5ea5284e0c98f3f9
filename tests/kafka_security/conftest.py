"""A second broker for this folder only: SASL_SSL with certificates made for the session.

trustme makes a CA and a server certificate for 127.0.0.1 and localhost; the broker
gets the key and chain as a PEM keystore, and SCRAM-SHA-512 users at format time. It
starts only when a test here asks for it; the rest of the suite keeps the PLAINTEXT one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from devtools.broker import BrokerSecurity, LocalKafka, free_port
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

USERS = {"broker": "broker-secret", "leadflow": "leadflow-secret"}


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    keystore: Path
    other_ca_file: Path
    """A CA that signed nothing the broker has: a client trusting only it must refuse."""


def _pkcs8(key_pem: bytes) -> bytes:
    """Kafka's PEM keystore reads PKCS#8 keys; trustme writes the traditional format."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = Path(tmp_path_factory.mktemp("tls"))
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    ca_file, keystore, other = folder / "ca.pem", folder / "broker.pem", folder / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    keystore.write_bytes(_pkcs8(server.private_key_pem.bytes()) + chain)
    trustme.CA().cert_pem.write_to_path(str(other))
    return Certificates(ca_file, keystore, other)


@pytest.fixture(scope="session")
def secure_kafka(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[LocalKafka]:
    security = BrokerSecurity(certificates.ca_file, certificates.keystore, USERS)
    broker = LocalKafka(
        Path(tmp_path_factory.mktemp("secure-kafka")), port=free_port(), security=security
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def secure_settings(secure_kafka: LocalKafka) -> LeadflowSettings:
    """Settings for the SASL_SSL broker as user leadflow, with topics no other test uses."""
    base = LeadflowSettings(topic_namespace=f"s{uuid.uuid4().hex[:10]}")
    settings = secure_kafka.client_settings(base, user="leadflow")
    await create_topics(settings, partitions=3)
    return settings
