"""Signing in to the dashboard over HTTP: the form token, the Origin check, the session
cookie and what it may be used for (the browser tests cover the same flow in Chromium)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from services.pipeline.sign_in import ForgedRequest, check_origin, local_target
from shared.api_keys import format_line, key_digest

READER = "lf_sign-in-reader"
MAILER = "lf_sign-in-mailer"
KEYS = ";".join(
    format_line(name, scopes, key_digest(key.encode()))
    for name, key, scopes in [("ops", READER, ["leads:read"]), ("mailer", MAILER, ["events:write"])]
)
BASE = "http://127.0.0.1:8003"


@pytest.fixture
async def browser(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser would, on plain HTTP to loopback."""
    settings = PipelineSettings(database_url=database_url, pipeline_consume=False, api_keys=KEYS)
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


async def form_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/dashboard/sign-in")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    assert client.cookies["leadflow_csrf"] == found.group(1)
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, fields: dict[str, str], origin: str | None = BASE
) -> httpx.Response:
    headers = {"origin": origin} if origin else {}
    return await client.post("/dashboard/sign-in", data=fields, headers=headers)


async def test_signing_in_sets_a_session_the_api_reads_accept(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/v1/funnel")).status_code == 401
    token = await form_token(browser)
    answer = await post_form(browser, {"csrf": token, "credential": READER, "next": "/dashboard"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard"
    cookie = answer.headers.get_list("set-cookie")
    session = next(c for c in cookie if c.startswith("leadflow_session="))
    assert READER not in session  # the cookie names the key, it does not hold it
    for attribute in ("HttpOnly", "SameSite=strict", "Max-Age="):
        assert attribute in session
    assert browser.cookies["leadflow_csrf"] != token  # a new form token after signing in
    assert (await browser.get("/v1/funnel")).status_code == 200


async def test_the_session_cookie_authorises_reads_only(browser: httpx.AsyncClient) -> None:
    token = await form_token(browser)
    await post_form(browser, {"csrf": token, "credential": READER})
    erase = await browser.delete("/v1/leads/ada@example.com")
    assert erase.status_code == 401  # a cookie a page can make the browser send changes nothing


@pytest.mark.parametrize(
    ("fields", "origin", "reason"),
    [
        ({"credential": READER}, BASE, "the form has expired"),
        ({"csrf": "x" * 43, "credential": READER}, BASE, "the form has expired"),
        ({"csrf": None, "credential": READER}, "https://evil.example", "another site"),
        ({"csrf": None, "credential": READER}, "null", "another site"),
    ],
)
async def test_a_forged_sign_in_is_refused(
    browser: httpx.AsyncClient, fields: dict[str, str | None], origin: str, reason: str
) -> None:
    token = await form_token(browser)
    sent = {name: token if value is None else value for name, value in fields.items()}
    answer = await post_form(browser, sent, origin)
    assert answer.status_code == 403
    assert reason in answer.text
    assert "leadflow_session" not in browser.cookies
    assert (await browser.get("/v1/funnel")).status_code == 401


async def test_a_wrong_or_unscoped_credential_is_refused_on_the_form(
    browser: httpx.AsyncClient,
) -> None:
    token = await form_token(browser)
    unknown = await post_form(browser, {"csrf": token, "credential": "lf_nobody"})
    assert unknown.status_code == 401
    assert "unknown API key" in unknown.text
    mailer = await post_form(browser, {"csrf": token, "credential": MAILER})
    assert mailer.status_code == 403
    assert "lacks scope leads:read" in mailer.text
    assert "leadflow_session" not in browser.cookies


async def test_signing_out_ends_the_session(browser: httpx.AsyncClient) -> None:
    await post_form(browser, {"csrf": await form_token(browser), "credential": READER})
    assert (await browser.get("/v1/funnel")).status_code == 200
    token = browser.cookies["leadflow_csrf"]
    out = await browser.post("/dashboard/sign-out", data={"csrf": token}, headers={"origin": BASE})
    assert out.status_code == 303
    assert out.headers["location"] == "/dashboard/sign-in?signed-out=true"
    assert "leadflow_session" not in browser.cookies
    assert (await browser.get("/v1/funnel")).status_code == 401


async def test_a_forged_sign_out_keeps_the_session(browser: httpx.AsyncClient) -> None:
    await post_form(browser, {"csrf": await form_token(browser), "credential": READER})
    forged = await browser.post(
        "/dashboard/sign-out", data={"csrf": "guess"}, headers={"origin": BASE}
    )
    assert forged.status_code == 403
    assert (await browser.get("/v1/funnel")).status_code == 200


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/dashboard"),
        ("/dashboard/leads?stage=prospect", "/dashboard/leads?stage=prospect"),
        ("https://evil.example/dashboard", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
        ("/dashboard\\@evil.example", "/dashboard"),
        ("/v1/leads", "/dashboard"),
    ],
)
def test_after_signing_in_only_a_dashboard_path_of_this_server(
    target: str | None, expected: str
) -> None:
    assert local_target(target) == expected


def test_origin_rules() -> None:
    check_origin("http://127.0.0.1:8003", None, "127.0.0.1:8003")
    check_origin(None, None, "127.0.0.1:8003")  # a script, not a browser: the token decides
    check_origin(None, "same-origin", "127.0.0.1:8003")
    for origin, site in [("http://127.0.0.1:9999", None), (None, "cross-site"), ("null", None)]:
        with pytest.raises(ForgedRequest):
            check_origin(origin, site, "127.0.0.1:8003")
