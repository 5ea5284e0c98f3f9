"""API keys: how they are made, how they are stored, how a presented key is found.

A key is stored only as the SHA-256 of its text, on a line of its own::

    name:scope,scope:sha256hex        e.g.  mailer:events:write:3f7a...c2

The name comes first and the digest last; neither may hold a ``:``, so a line splits
unambiguously although scopes do (``events:write``). Lines come from
``LEADFLOW_API_KEYS_FILE`` (one per line; blank lines and ``#`` comments are skipped)
and from ``LEADFLOW_API_KEYS`` (the same lines, separated by newlines or ``;``).
``leadflow keys create`` makes a key and prints its line.

A plain SHA-256, not a slow password hash: keys are 256 random bits, so there is
nothing to guess from the digest, and every request can be checked in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCOPES = ("events:write", "crm:write", "leads:read", "admin")
"""Every scope there is: post events, post CRM decisions, read leads, manage the system."""

KEY_PREFIX = "lf_"
"""Marks leadflow keys, so a leaked one is recognised (and found by secret scanners)."""

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")


class KeyLineError(ValueError):
    """A stored key line that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One stored key: who holds it and what it may do, never the key itself."""

    name: str
    scopes: frozenset[str]
    digest: bytes


def key_digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise KeyLineError(
            f"key name {name!r} is not valid: 1 to 64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    found = frozenset(scope.strip() for scope in scopes if scope.strip())
    unknown = sorted(found - set(SCOPES))
    if unknown:
        raise KeyLineError(f"unknown scope {unknown[0]!r}: the scopes are {', '.join(SCOPES)}")
    if not found:
        raise KeyLineError(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return found


def format_line(name: str, scopes: Iterable[str], digest: bytes) -> str:
    return f"{name}:{','.join(sorted(scopes))}:{digest.hex()}"


def parse_line(line: str) -> ApiKey:
    name, colon, rest = line.strip().partition(":")
    scopes, colon2, digest = rest.rpartition(":")
    if not (colon and colon2):
        raise KeyLineError("expected name:scope,scope:sha256hex")
    if not _DIGEST_PATTERN.fullmatch(digest):
        raise KeyLineError("the last field must be the key's SHA-256, 64 lowercase hex digits")
    return ApiKey(check_name(name), check_scopes(scopes.split(",")), bytes.fromhex(digest))


def split_lines(text: str) -> list[str]:
    """The key lines of a file or of ``LEADFLOW_API_KEYS``: no blanks, no ``#`` comments."""
    lines = (line.strip() for chunk in text.splitlines() for line in chunk.split(";"))
    return [line for line in lines if line and not line.startswith("#")]


def parse_keys(lines: Iterable[tuple[str, str]]) -> dict[bytes, ApiKey]:
    """Keys by digest, from ``(where, line)`` pairs; names and keys must each be unique.

    ``where`` (``LEADFLOW_API_KEYS line 2``) goes into the error, never the line itself.
    """
    keys: dict[bytes, ApiKey] = {}
    names: set[str] = set()
    for where, line in lines:
        try:
            key = parse_line(line)
        except KeyLineError as exc:
            raise KeyLineError(f"{where}: {exc}") from None
        if key.name in names:
            raise KeyLineError(f"{where}: a second key named {key.name!r}")
        if key.digest in keys:
            raise KeyLineError(f"{where}: the same key as {keys[key.digest].name!r}")
        names.add(key.name)
        keys[key.digest] = key
    return keys


def find_key(keys: Mapping[bytes, ApiKey], presented: bytes) -> ApiKey | None:
    """The stored key ``presented`` hashes to, compared in constant time.

    The dict lookup hashes the digest, not the key: how long it takes can only tell an
    attacker about the SHA-256 of what they sent, which they know already, and nothing
    about a stored digest's preimage. compare_digest then confirms the match without
    stopping at the first differing byte.
    """
    digest = key_digest(presented)
    found = keys.get(digest)
    if found is None or not hmac.compare_digest(found.digest, digest):
        return None
    return found


def new_key() -> str:
    """256 random bits, URL-safe, with the leadflow prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(name: str, scopes: Iterable[str]) -> tuple[str, str]:
    """A new key and the line that stores it; raises :class:`KeyLineError` on bad input."""
    checked = check_scopes(scopes)
    key = new_key()
    return key, format_line(check_name(name), checked, key_digest(key.encode()))
