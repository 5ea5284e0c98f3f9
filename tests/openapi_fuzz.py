"""Schemathesis settings and checks shared by the services' OpenAPI fuzz tests.

Each service's ``test_openapi_fuzz.py`` serves the real app on loopback and
lets schemathesis send what its OpenAPI document allows (positive cases) and
what it does not (negative ones). Every response must not be a 5xx, must
match the documented status codes, headers and schemas, and every 4xx must
name the problem in a ``detail``. Schema-valid requests must be accepted,
schema-invalid ones refused: the document says what the service really takes.

The run is deterministic (a fixed seed, derandomized Hypothesis) and
bounded, so a failure reproduces and the suite stays fast.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.servers import serving

SEED = 20261120
MAX_EXAMPLES = 60


def config(**extra: Any) -> schemathesis.Config:
    """A fixed seed and a bounded number of examples per operation."""
    return schemathesis.Config.from_dict(
        {"seed": SEED, "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True}, **extra}
    )


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The server is a fixture on purpose: one per operation, shared by all its inputs.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
"""Hypothesis settings of each operation's test: bounded, deterministic, no deadline."""

HOSTILE_SETTINGS = settings(
    FUZZ_SETTINGS,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""The deeper strategies' tests: more examples, as each is one cheap request."""


def _field_error(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    loc, msg, kind = item.get("loc"), item.get("msg"), item.get("type")
    return (
        isinstance(loc, list)
        and bool(loc)
        and isinstance(msg, str)
        and bool(msg.strip())
        and isinstance(kind, str)
        and bool(kind)
    )


def client_errors_name_the_problem(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every 4xx is JSON with a ``detail``: a sentence, or FastAPI's list of {loc, msg, type}."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} without a JSON body: {response.content[:200]!r}"
        ) from exc
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return None
    if isinstance(detail, list) and detail and all(_field_error(item) for item in detail):
        return None
    raise AssertionError(
        f"{response.status_code} whose body does not name the problem "
        f"(a non-empty detail string, or a list of {{loc, msg, type}}): {body!r}"
    )


def _rejected_only_for(response: schemathesis.Response, rules: tuple[str, ...]) -> bool:
    """A 422 whose every error message is one of ``rules``."""
    if response.status_code != 422 or not rules:
        return False
    detail = response.json().get("detail")
    return (
        isinstance(detail, list)
        and bool(detail)
        and all(any(rule in str(error.get("msg")) for rule in rules) for error in detail)
    )


def checks(*unexpressible: str) -> list[schemathesis.CheckFunction]:
    """What every response is checked by.

    ``unexpressible``: messages of the service's rules that JSON Schema cannot
    state (a time at most a day ahead of the server's clock, a cursor it
    issued): a schema-valid request refused with only those errors passes.
    """

    def schema_valid_requests_are_accepted(
        ctx: schemathesis.CheckContext,
        response: schemathesis.Response,
        case: schemathesis.Case[Any],
    ) -> bool | None:
        try:
            return positive_data_acceptance(ctx, response, case)
        except RejectedPositiveData:
            if _rejected_only_for(response, unexpressible):
                return None
            raise

    return [
        schemathesis.checks.not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
        schema_valid_requests_are_accepted,
        missing_required_header,
        unsupported_method,
        allow_header_conformance,
        ignored_auth,
        client_errors_name_the_problem,
    ]


@contextmanager
def serving_documented(app: FastAPI, document: dict[str, Any]) -> Iterator[str]:
    """``app`` on loopback, checked to serve the very ``document`` the cases come from."""
    with serving(app) as url:
        assert httpx.get(f"{url}/openapi.json").json() == document
        yield url


# --- deeper strategies: what an attacker tries that a schema does not suggest ---------

ODD_TEXT = st.text(
    st.characters(codec=None, exclude_categories=[])
    | st.sampled_from(
        ["\x00", "\u202e", "\ufeff", "\U0001f600", "\ud800", "\udfff", "%", "/", "\\"]
    ),
    max_size=40,
)
"""Any code point, lone surrogates included, and the characters that break naive code."""


@st.composite
def deep_json(draw: st.DrawFn) -> str:
    """Arrays or objects nested from a few levels to past every parser's limit, as text."""
    depth = draw(st.integers(1, 40) | st.integers(190, 260) | st.integers(900, 1600))
    if draw(st.booleans()):
        return "[" * depth + draw(st.sampled_from(["", "1", "]" * depth]))
    return '{"a":' * depth + "1" + "}" * draw(st.sampled_from([0, depth]))


HUGE_NUMBERS = st.sampled_from(
    ["1e999999", "-1e999999", "1" * 5000, "-" + "9" * 4301, "1e-999999", "0." + "0" * 5000 + "1",
     "NaN", "Infinity", "-0", "9223372036854775808", "1E400"]
)  # fmt: skip
"""Numbers past float range, past Python's int-string digits limit, and not numbers at all."""


def hostile_json() -> st.SearchStrategy[str]:
    """JSON text (or nearly) that is deep, huge, or odd in its strings."""
    strings = ODD_TEXT.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
    pairs = st.tuples(HUGE_NUMBERS | strings, strings | ODD_TEXT)
    return (
        deep_json()
        | HUGE_NUMBERS
        | HUGE_NUMBERS.map(lambda n: f'[{n},"ada@example.com"]')
        | pairs.map(lambda p: f"[{p[0]},{p[1]}]")
        | strings
        | st.sampled_from(['["\\ud800"]', '[1,"\\u0000"]', '[true,"x"]', "[1]", "{}"])
    )


def _b64(raw: bytes, padded: bool) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if padded else text.rstrip("=")


def hostile_cursors() -> st.SearchStrategy[str]:
    """Cursors as this API issues them (URL-safe base64 of JSON) but of hostile JSON, deep
    JSON on its own (the likeliest to find a parser's limit), arbitrary bytes, or no
    base64 at all; never longer than the API takes."""

    def encoded(raw: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
        return st.tuples(raw, st.booleans()).map(lambda args: _b64(*args)[:2048])

    def utf8(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    return st.one_of(
        encoded(deep_json().map(utf8)),
        encoded(hostile_json().map(utf8)),
        encoded(st.binary(max_size=64)),
        ODD_TEXT,
        st.text("=-_+/", max_size=8),
    )
