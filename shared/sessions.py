"""Signed session cookies: a person signs in once with a key or token, then the browser
sends a cookie instead (the dashboard, docs/architecture.md §6).

The cookie never holds the credential. For an API key it names the stored key by its
digest, so a key taken out of the configuration ends its sessions with it; for a JWT it
holds the token's subject and scopes and never outlives the token. Each value carries
its own expiry and an HMAC-SHA256 under the server's secret: the server keeps no session
table, and replicas that share the secret accept each other's cookies. Changing the
secret ends every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "leadflow_session"
CSRF_COOKIE = "leadflow_csrf"
"""The sign-in and sign-out forms' token (double submit: the form field must equal it)."""

_VERSION = "1"


@dataclass(frozen=True, slots=True)
class Session:
    """What a cookie says: ``key`` sessions name a key by its digest (hex), ``token``
    sessions carry the token's subject and scopes."""

    kind: str
    name: str
    scopes: frozenset[str]
    expires_at: float


class SessionSeal:
    """Seals sessions into cookie values and opens them again, checking the MAC and expiry."""

    def __init__(
        self, secret: bytes, ttl_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the session secret must be at least 32 bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def issue(
        self, kind: str, name: str, scopes: frozenset[str], not_after: float | None = None
    ) -> tuple[Session, str]:
        """A new session, at most ``ttl_seconds`` long and never past ``not_after``."""
        expires_at = self.clock() + self.ttl_seconds
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        session = Session(kind, name, scopes, expires_at)
        return session, self.seal(session)

    def seal(self, session: Session) -> str:
        payload = json.dumps(
            [_VERSION, session.kind, session.name, sorted(session.scopes), session.expires_at],
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return f"{body}.{_b64(self._mac(body))}"

    def open(self, value: str) -> Session | None:
        """The session ``value`` seals, or None: forged, altered, malformed or expired."""
        body, dot, mac = value.partition(".")
        if not dot or not value.isascii():
            return None
        try:
            presented = _unb64(mac)
            if not hmac.compare_digest(presented, self._mac(body)):
                return None
            version, kind, name, scopes, expires_at = json.loads(_unb64(body))
        except (ValueError, TypeError, binascii.Error):
            return None
        if version != _VERSION or kind not in ("key", "token"):
            return None
        if not isinstance(expires_at, int | float) or expires_at <= self.clock():
            return None
        return Session(str(kind), str(name), frozenset(map(str, scopes)), float(expires_at))

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
