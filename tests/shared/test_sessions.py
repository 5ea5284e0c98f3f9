"""Signed session cookies: what a cookie value proves, and everything that voids it."""

from __future__ import annotations

import base64
import json

import pytest

from shared.sessions import Session, SessionSeal

SECRET = b"s" * 32
SCOPES = frozenset({"leads:read", "admin"})


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seal_at(clock: Clock, ttl: float = 3600.0, secret: bytes = SECRET) -> SessionSeal:
    return SessionSeal(secret, ttl, clock)


def test_a_sealed_session_opens_to_itself() -> None:
    seal = seal_at(Clock())
    session, value = seal.issue("token", "ada", SCOPES)
    assert seal.open(value) == session
    assert session == Session("token", "ada", SCOPES, 1_000_000.0 + 3600.0)


def test_the_cookie_holds_no_credential_and_is_cookie_safe() -> None:
    _, value = seal_at(Clock()).issue("key", "ab" * 32, frozenset())
    assert all(c.isalnum() or c in "-_." for c in value)  # no quoting needed in a cookie
    body = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert body == ["1", "key", "ab" * 32, [], 1_003_600.0]


def test_a_session_never_outlives_its_token() -> None:
    session, _ = seal_at(Clock()).issue("token", "ada", SCOPES, not_after=1_000_060.0)
    assert session.expires_at == 1_000_060.0
    later, _ = seal_at(Clock()).issue("token", "ada", SCOPES, not_after=2_000_000.0)
    assert later.expires_at == 1_003_600.0  # the session's own length is the bound then


def test_expiry_is_exact_on_the_injected_clock() -> None:
    clock = Clock()
    seal = seal_at(clock, ttl=60.0)
    _, value = seal.issue("token", "ada", SCOPES)
    clock.now += 59.999
    assert seal.open(value) is not None
    clock.now += 0.001
    assert seal.open(value) is None


def test_another_secret_opens_nothing() -> None:
    clock = Clock()
    _, value = seal_at(clock).issue("token", "ada", SCOPES)
    assert seal_at(clock, secret=b"t" * 32).open(value) is None


def resealed(value: str, change: list[object]) -> str:
    """The value's body replaced by ``change``, keeping the old MAC."""
    mac = value.split(".")[1]
    body = base64.urlsafe_b64encode(json.dumps(change).encode()).rstrip(b"=").decode()
    return f"{body}.{mac}"


def test_altered_scopes_or_expiry_void_the_cookie() -> None:
    seal = seal_at(Clock())
    _, value = seal.issue("token", "ada", frozenset({"leads:read"}))
    assert seal.open(resealed(value, ["1", "token", "ada", ["admin"], 1_003_600.0])) is None
    assert seal.open(resealed(value, ["1", "token", "ada", ["leads:read"], 9e12])) is None


@pytest.mark.parametrize(
    "value",
    ["", ".", "no-dot", "a.b", "é.é", "%%%.%%%", "a" * 5000, "e30.AAAA"],
)
def test_malformed_values_open_to_nothing(value: str) -> None:
    assert seal_at(Clock()).open(value) is None


def test_a_well_signed_value_of_another_shape_is_refused() -> None:
    """A correct MAC over a body this version never writes (a future format, another kind,
    a non-numeric expiry) still opens to nothing rather than to a half-read session."""
    seal = seal_at(Clock())
    for body in (
        ["2", "token", "ada", [], 2e6],
        ["1", "admin", "ada", [], 2e6],
        ["1", "token", "ada", [], "tomorrow"],
        ["1", "token", "ada", []],
    ):
        encoded = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        mac = base64.urlsafe_b64encode(seal._mac(encoded)).rstrip(b"=").decode()
        assert seal.open(f"{encoded}.{mac}") is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SessionSeal(b"short", 60.0)
