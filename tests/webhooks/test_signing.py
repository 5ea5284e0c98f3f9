"""Our signatures, checked with the Standard Webhooks reference library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.webhooks.sealing import SealingError, SecretBox
from services.webhooks.signing import SECRET_BYTES, new_secret, signed_headers

BODY = b'{"type":"lead.created","timestamp":"2026-11-20T10:00:00Z","data":{}}'


def test_a_secret_is_whsec_and_base64_of_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == SECRET_BYTES
    assert new_secret() != secret


def test_the_reference_library_accepts_our_signature() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "msg_1", datetime.now(UTC), BODY)
    assert Webhook(secret).verify(BODY, headers)["type"] == "lead.created"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers([new, old], "msg_2", datetime.now(UTC), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_sealed_secrets_open_only_with_their_key() -> None:
    box = SecretBox("a long random key")
    secret = new_secret()
    sealed = box.seal(secret)
    assert secret not in sealed
    assert box.open(sealed) == secret
    with pytest.raises(SealingError):
        SecretBox("another key").open(sealed)
    with pytest.raises(SealingError):
        SecretBox(None).open(sealed)
    assert SecretBox(None).open(SecretBox(None).seal(secret)) == secret
