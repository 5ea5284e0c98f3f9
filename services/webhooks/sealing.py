"""Signing secrets at rest: sealed with AES-GCM under a key only the service holds.

A dump of the database alone then does not let anyone sign as leadflow. The key
is ``LEADFLOW_WEBHOOKS_SECRET_KEY`` (any long random string; SHA-256 makes the
AES key of it). Without one, secrets are stored as they are, marked ``plain:``,
and the service warns at start; sealing them later needs only the key set and
each endpoint's secret rotated.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED = "aesgcm:"
PLAIN = "plain:"


class SealingError(ValueError):
    """A stored secret that this key cannot open (another key, or damaged)."""


class SecretBox:
    def __init__(self, key: str | None) -> None:
        self._aead = AESGCM(hashlib.sha256(key.encode()).digest()) if key else None

    @property
    def seals(self) -> bool:
        return self._aead is not None

    def seal(self, secret: str) -> str:
        if self._aead is None:
            return PLAIN + secret
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), None)
        return SEALED + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        if stored.startswith(PLAIN):
            return stored.removeprefix(PLAIN)
        if not stored.startswith(SEALED) or self._aead is None:
            raise SealingError("a sealed secret, and no key to open it")
        raw = base64.b64decode(stored.removeprefix(SEALED))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except Exception as exc:
            raise SealingError("the secret does not open with this key") from exc
