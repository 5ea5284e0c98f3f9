"""JWT bearer tokens from an identity provider, verified against its JWKS.

The key set is fetched with httpx's async client, so the event loop never waits on
the provider, and kept for ``cache_seconds``. A token signed with a key id the set
does not hold fetches it again at once (the provider has rotated its keys), but at
most every ``refresh_min_seconds``, so tokens with made-up key ids cannot turn every
request into a call to the provider. Concurrent refreshes share one fetch.

Only asymmetric algorithms are accepted, each bound to the key's own type by PyJWT:
a token cannot choose ``none`` or an HMAC keyed with a public key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class InvalidToken(Exception):
    """The token is not one to trust; the message is the reason, safe to show the caller."""


class KeySetUnavailable(Exception):
    """The provider's key set could not be fetched; the caller may retry later."""


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    scopes: frozenset[str]
    expires_at: float | None = None
    """The ``exp`` claim: a session opened with the token ends by then."""


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token must say to be accepted."""

    issuer: str
    audience: str
    scope_claim: str = "scope"
    leeway_seconds: float = 30.0


def scopes_of(claims: dict[str, Any], claim: str) -> frozenset[str]:
    """Scopes from ``claim``: a space-separated string (OAuth ``scope``) or a list (``scp``)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated parts; leadflow API keys never hold a dot."""
    return credential.count(".") == 2


class JwksVerifier:
    def __init__(
        self,
        url: str,
        rules: TokenRules,
        *,
        cache_seconds: float = 300.0,
        refresh_min_seconds: float = 5.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.rules = rules
        self.cache_seconds = cache_seconds
        self.refresh_min_seconds = refresh_min_seconds
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._fetching: asyncio.Lock | None = None

    async def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"token algorithm {alg!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token header has a kid that is not a string")
        key = await self._key(kid)
        return self._decode(token, key)

    def _decode(self, token: str, key: jwt.PyJWK) -> Claims:
        rules = self.rules
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=rules.audience,
                issuer=rules.issuer,
                leeway=rules.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience is not this service's") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer is not the configured one") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature is invalid") from None
        except jwt.PyJWTError:
            raise InvalidToken("token is invalid") from None
        return Claims(
            str(claims["sub"]), scopes_of(claims, rules.scope_claim), float(claims["exp"])
        )

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        """The key ``kid`` names; a token without a kid, the set's only key."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
        may_refresh = self._fetched_at is None or now - self._fetched_at >= self.refresh_min_seconds
        if stale or (self._find(kid) is None and may_refresh):
            await self._refresh(self._fetched_at)
        key = self._find(kid)
        if key is None and not self._keys:
            raise KeySetUnavailable("no key set could be fetched yet")
        if key is None:
            raise InvalidToken("token signing key is not in the issuer's key set")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        only = list(self._keys.values())
        return only[0] if len(only) == 1 else None

    async def _refresh(self, seen: float | None) -> None:
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            if self._fetched_at != seen:
                return  # another request fetched it meanwhile
            try:
                async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    keys = jwt.PyJWKSet.from_dict(response.json()).keys
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                if not self._keys:
                    raise KeySetUnavailable(str(exc)) from exc
                return  # keep the keys we had; retried after refresh_min_seconds
            finally:
                self._fetched_at = self.clock()
            self._keys = {key.key_id or "": key for key in keys}
