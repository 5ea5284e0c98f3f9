"""JWT bearer tokens, checked against a key set this test serves itself on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from shared.auth import LeadsReader, install_auth
from shared.jwks import InvalidToken, JwksVerifier, KeySetUnavailable, TokenRules
from shared.settings import LeadflowSettings
from tests.servers import serving

ISSUER = "https://id.example.test/"
AUDIENCE = "leadflow"

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Signer:
    kid: str
    key: SigningKey
    algorithm: str

    def jwk(self) -> dict[str, Any]:
        if isinstance(self.key, rsa.RSAPrivateKey):
            data = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        else:
            data = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "svc-crm",
            "iat": now,
            "exp": now + 300,
            "scope": "leads:read crm:write",
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm=self.algorithm, headers={"kid": self.kid})


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ec_signer(kid: str) -> Signer:
    return Signer(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


@dataclass
class KeySet:
    """What the identity provider publishes; the test rotates it."""

    signers: list[Signer]
    fetches: int = 0
    broken: bool = False
    served: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/jwks.json")
        async def jwks() -> dict[str, Any]:
            self.fetches += 1
            if self.broken:
                raise RuntimeError("provider down")
            return {"keys": [signer.jwk() for signer in self.signers]}

        return app


@pytest.fixture(scope="module")
def first() -> Signer:
    return rsa_signer("k1")


@pytest.fixture
def keyset(first: Signer) -> KeySet:
    return KeySet([first])


@pytest.fixture
def jwks_url(keyset: KeySet) -> Iterator[str]:
    with serving(keyset.app()) as url:
        yield f"{url}/.well-known/jwks.json"


def verifier(url: str, **options: Any) -> JwksVerifier:
    rules = TokenRules(ISSUER, AUDIENCE, options.pop("scope_claim", "scope"), 0)
    return JwksVerifier(url, rules, **{"refresh_min_seconds": 0.0, **options})


async def test_a_valid_token_gives_its_subject_and_scopes(first: Signer, jwks_url: str) -> None:
    claims = await verifier(jwks_url).verify(first.token())
    assert claims.subject == "svc-crm"
    assert claims.scopes == {"leads:read", "crm:write"}


async def test_scopes_from_a_list_claim(first: Signer, jwks_url: str) -> None:
    token = first.token(scp=["leads:read", "admin"])
    claims = await verifier(jwks_url, scope_claim="scp").verify(token)
    assert claims.scopes == {"leads:read", "admin"}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "token expired"),
        ({"aud": "someone-else"}, "token audience is not this service's"),
        ({"iss": "https://evil.example.test/"}, "token issuer is not the configured one"),
        ({"nbf": int(time.time()) + 3600}, "token is not valid yet"),
        ({"sub": None}, "token has no 'sub' claim"),
    ],
    ids=["expired", "audience", "issuer", "not-yet", "no-subject"],
)
async def test_a_token_that_fails_a_rule_is_refused_with_the_reason(
    first: Signer, jwks_url: str, claims: dict[str, Any], reason: str
) -> None:
    token = first.token(**claims)
    if claims.get("sub", "") is None:
        token = first.token()
        payload = jwt.decode(token, options={"verify_signature": False})
        del payload["sub"]
        token = jwt.encode(payload, first.key, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken, match=f"^{reason}$"):
        await verifier(jwks_url).verify(token)


async def test_a_bad_signature_is_refused(first: Signer, jwks_url: str) -> None:
    impostor = Signer("k1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    with pytest.raises(InvalidToken, match=r"^token signature is invalid$"):
        await verifier(jwks_url).verify(impostor.token())
    header, payload, _ = first.token().split(".")
    forged = f"{header}.{payload}.{impostor.token().split('.')[2]}"
    with pytest.raises(InvalidToken, match=r"^token signature is invalid$"):
        await verifier(jwks_url).verify(forged)


async def test_none_and_hmac_tokens_are_refused(first: Signer, jwks_url: str) -> None:
    unsigned = jwt.encode({"sub": "x"}, "", algorithm="none", headers={"kid": "k1"})
    with pytest.raises(InvalidToken, match="algorithm 'none' is not accepted"):
        await verifier(jwks_url).verify(unsigned)
    # the classic confusion: an HMAC keyed with the public modulus
    secret = first.jwk()["n"]
    hmac_token = jwt.encode({"sub": "x"}, secret, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(InvalidToken, match="algorithm 'HS256' is not accepted"):
        await verifier(jwks_url).verify(hmac_token)
    with pytest.raises(InvalidToken, match="token is malformed"):
        await verifier(jwks_url).verify("not.a.token")


async def test_a_token_without_kid_uses_the_only_key(first: Signer, jwks_url: str) -> None:
    payload = jwt.decode(first.token(), options={"verify_signature": False})
    token = jwt.encode(payload, first.key, algorithm="RS256")
    assert (await verifier(jwks_url).verify(token)).subject == "svc-crm"


async def test_the_key_set_is_cached(first: Signer, keyset: KeySet, jwks_url: str) -> None:
    checking = verifier(jwks_url, refresh_min_seconds=60.0)
    for _ in range(3):
        await checking.verify(first.token())
    assert keyset.fetches == 1


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    first: Signer, keyset: KeySet, jwks_url: str
) -> None:
    checking = verifier(jwks_url)
    await checking.verify(first.token())
    second = ec_signer("k2")
    keyset.signers = [second]  # the provider rotated: k1 is gone, k2 signs
    claims = await checking.verify(second.token(sub="svc-after-rotation"))
    assert claims.subject == "svc-after-rotation"
    assert keyset.fetches == 2
    # k1 is no longer in the set: its tokens are refused
    with pytest.raises(InvalidToken, match="signing key is not in the issuer's key set"):
        await checking.verify(first.token())


async def test_unknown_key_ids_refetch_at_most_every_so_often(
    first: Signer, keyset: KeySet, jwks_url: str
) -> None:
    now = [0.0]
    checking = verifier(jwks_url, refresh_min_seconds=10.0, clock=lambda: now[0])
    await checking.verify(first.token())
    stranger = rsa_signer("made-up")
    for _ in range(5):
        with pytest.raises(InvalidToken, match="not in the issuer's key set"):
            await checking.verify(stranger.token())
    assert keyset.fetches == 1
    now[0] = 10.0
    with pytest.raises(InvalidToken):
        await checking.verify(stranger.token())
    assert keyset.fetches == 2


async def test_an_unreachable_provider_is_unavailable_not_invalid(
    first: Signer, keyset: KeySet, jwks_url: str
) -> None:
    keyset.broken = True
    with pytest.raises(KeySetUnavailable):
        await verifier(jwks_url).verify(first.token())


async def test_keys_already_fetched_outlive_an_outage(
    first: Signer, keyset: KeySet, jwks_url: str
) -> None:
    now = [0.0]
    checking = verifier(jwks_url, cache_seconds=60.0, clock=lambda: now[0])
    await checking.verify(first.token())
    keyset.broken = True
    now[0] = 120.0  # stale: refetched, fails, the known keys stay
    assert (await checking.verify(first.token())).subject == "svc-crm"
    assert keyset.fetches == 2


# --- over HTTP, through the service's auth --------------------------------------------------


@pytest.fixture
async def service(jwks_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()

    @app.get("/v1/leads")
    async def leads(caller: LeadsReader) -> dict[str, str | None]:
        return {"caller": caller.name if caller else None}

    settings = LeadflowSettings(
        jwt_jwks_url=jwks_url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks_refresh_min_seconds=0,
    )
    install_auth(app, settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_a_token_is_a_bearer_credential(first: Signer, service: httpx.AsyncClient) -> None:
    ok = await service.get("/v1/leads", headers={"Authorization": f"Bearer {first.token()}"})
    assert ok.json() == {"caller": "svc-crm"}
    expired = first.token(exp=int(time.time()) - 60)
    refused = await service.get("/v1/leads", headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "invalid token: token expired"}
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    reader = first.token(scope="crm:write")
    forbidden = await service.get("/v1/leads", headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "detail": "token 'svc-crm' lacks scope leads:read needed for GET /v1/leads"
    }


async def test_the_document_declares_the_jwt_scheme(service: httpx.AsyncClient) -> None:
    schema = (await service.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"] == {
        "JWT": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT of the configured issuer; scopes in its 'scope' claim.",
        }
    }
    assert schema["paths"]["/v1/leads"]["get"]["security"] == [{"JWT": []}]


async def test_an_unreachable_provider_is_a_503(
    first: Signer, keyset: KeySet, service: httpx.AsyncClient
) -> None:
    keyset.broken = True
    response = await service.get("/v1/leads", headers={"Authorization": f"Bearer {first.token()}"})
    assert response.status_code == 503
    assert "retry later" in response.json()["detail"]
    assert "provider down" not in response.text


def test_a_jwks_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValueError, match="LEADFLOW_JWT_ISSUER"):
        LeadflowSettings(jwt_jwks_url="http://127.0.0.1:1/jwks")
