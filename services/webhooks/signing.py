"""Standard Webhooks v1 signatures, and the endpoints' signing secrets.

A secret is ``whsec_`` and the base64 of 24 random bytes; the HMAC key is those
bytes. The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, so a
receiver that checks the timestamp's age also refuses a replayed request.
During a rotation the body is signed with each valid secret, the signatures
separated by spaces: a receiver holding either secret accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` under ``secret``."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets_in_force: Iterable[str], webhook_id: str, sent_at: datetime, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with every secret given."""
    timestamp = int(sent_at.timestamp())
    signatures = " ".join(signature(s, webhook_id, timestamp, body) for s in secrets_in_force)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
