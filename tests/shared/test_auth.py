"""shared/auth.py and shared/api_keys.py: stored keys, scopes, 401 vs 403, secure defaults."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request

from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring import stages
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.api_keys import (
    KEY_PREFIX,
    KeyLineError,
    create_key,
    find_key,
    format_line,
    key_digest,
    parse_keys,
    parse_line,
    split_lines,
)
from shared.auth import (
    Admin,
    AuthConfigurationError,
    LeadsReader,
    install_auth,
    is_loopback,
    load_authenticator,
)
from shared.cli import main
from shared.events import CRM_EVENT_TYPES
from shared.probes import install_probes
from shared.settings import LeadflowSettings

READER_KEY = "lf_reader-key"
ADMIN_KEY = "lf_admin-key"
MAILER_KEY = "lf_mailer-key"


def line(name: str, key: str, *scopes: str) -> str:
    return format_line(name, scopes, key_digest(key.encode()))


KEYS = "\n".join(
    [
        line("reader", READER_KEY, "leads:read"),
        line("root", ADMIN_KEY, "admin", "leads:read"),
        line("mailer", MAILER_KEY, "events:write"),
    ]
)


# --- key lines ----------------------------------------------------------------------------


def test_a_created_key_is_random_prefixed_and_found_by_its_line() -> None:
    key, stored = create_key("mailer", ["events:write", "crm:write"])
    other, _ = create_key("mailer", ["events:write"])
    assert key.startswith(KEY_PREFIX)
    assert key != other
    assert len(key) > 40
    assert key not in stored
    parsed = parse_line(stored)
    assert parsed.name == "mailer"
    assert parsed.scopes == {"events:write", "crm:write"}
    keys = parse_keys([("here", stored)])
    found = find_key(keys, key.encode())
    assert found is not None
    assert found.name == "mailer"
    assert find_key(keys, other.encode()) is None
    assert find_key(keys, b"") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mailer", "expected name:scope,scope:sha256hex"),
        ("mailer:events:write:abc", "64 lowercase hex digits"),
        (f"Mailer:events:write:{'a' * 64}", "key name 'Mailer' is not valid"),
        (f"mailer:events:read:{'a' * 64}", "unknown scope 'events:read'"),
        (f"mailer::{'a' * 64}", "at least one scope"),
    ],
)
def test_a_bad_line_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(KeyLineError, match=reason):
        parse_line(text)


def test_names_and_keys_are_unique() -> None:
    one = line("a", "k1", "admin")
    with pytest.raises(KeyLineError, match="line 2: a second key named 'a'"):
        parse_keys([("line 1", one), ("line 2", line("a", "k2", "admin"))])
    with pytest.raises(KeyLineError, match="line 2: the same key as 'a'"):
        parse_keys([("line 1", one), ("line 2", line("b", "k1", "admin"))])


def test_lines_split_on_newlines_and_semicolons_skipping_comments() -> None:
    assert split_lines(" a ;b\n# note\n\n c ") == ["a", "b", "c"]


def test_the_settings_read_keys_from_the_variable_and_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# one key\n{line('filed', 'lf_f', 'admin')}\n")
    settings = LeadflowSettings(api_keys=line("inline", "lf_i", "admin"), api_keys_file=key_file)
    names = {key.name for key in load_authenticator(settings).keys.values()}
    assert names == {"filed", "inline"}


def test_bad_key_configuration_refuses_to_start_naming_the_place(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("\n\nnot a key line\n")
    with pytest.raises(AuthConfigurationError, match="LEADFLOW_API_KEYS_FILE line 3"):
        load_authenticator(LeadflowSettings(api_keys_file=key_file))
    with pytest.raises(AuthConfigurationError, match="cannot be read"):
        load_authenticator(LeadflowSettings(api_keys_file=tmp_path / "missing"))
    # the old format (plain comma-separated keys) is refused, not silently accepted
    with pytest.raises(AuthConfigurationError, match="LEADFLOW_API_KEYS entry 1"):
        load_authenticator(LeadflowSettings(api_keys="k-1,k-2"))


def test_the_crm_event_types_are_the_ones_scoring_applies() -> None:
    assert {stages.DEAL_WON, stages.LEAD_DISQUALIFIED, stages.STAGE_SET} == CRM_EVENT_TYPES


def test_keys_create_prints_the_key_once_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--name", "mailer", "--scopes", "events:write"]) == 0
    out = capsys.readouterr().out.splitlines()
    key, stored = out[1].strip(), out[-1].strip()
    assert key.startswith(KEY_PREFIX)
    assert out.count(f"  {key}") == 1
    found = find_key(parse_keys([("printed", stored)]), key.encode())
    assert found is not None
    assert found.scopes == {"events:write"}


def test_keys_create_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--name", "a:b", "--scopes", "admin"]) == 2
    assert "key name 'a:b' is not valid" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "ops", "--scopes", "everything"]) == 2
    assert "unknown scope 'everything'" in capsys.readouterr().err


# --- secure by default --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "leadflow.internal"])
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_a_public_address_without_keys_refuses_to_start() -> None:
    with pytest.raises(AuthConfigurationError, match=r"refusing to serve on 0\.0\.0\.0") as error:
        create_pipeline(PipelineSettings(host="0.0.0.0"))
    assert "LEADFLOW_AUTH=disabled" in str(error.value)
    assert "leadflow keys create" in str(error.value)
    # with keys it starts, and so it does when told explicitly to go without
    create_pipeline(PipelineSettings(host="0.0.0.0", api_keys=KEYS))
    create_pipeline(PipelineSettings(host="0.0.0.0", auth="disabled"))


def test_the_cli_says_why_a_service_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADFLOW_HOST", "0.0.0.0")
    for name in ("LEADFLOW_API_KEYS", "LEADFLOW_API_KEYS_FILE", "LEADFLOW_JWT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["scoring"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("leadflow scoring: refusing to serve on 0.0.0.0")


async def test_disabled_auth_warns_at_every_start(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install_auth(app, LeadflowSettings(host="0.0.0.0", auth="disabled"))
    caplog.set_level(logging.WARNING, logger="shared.auth")
    for _ in range(2):
        async with LifespanManager(app):
            pass
    warnings = [r for r in caplog.records if "LEADFLOW_AUTH=disabled" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)


# --- an app with scopes -------------------------------------------------------------------


def scoped_app(settings: LeadflowSettings) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/things/{thing_id}")
    async def read(thing_id: str, caller: LeadsReader, request: Request) -> dict[str, Any]:
        # what the access log reads: the ASGI scope's state
        stored = request.scope.get("state", {}).get("principal")
        return {
            "thing": thing_id,
            "caller": caller.name if caller else "anyone",
            "stored": [stored.name, sorted(stored.scopes)] if stored else None,
        }

    @app.delete("/v1/things/{thing_id}")
    async def erase(thing_id: str, caller: Admin) -> dict[str, str]:
        return {"erased": thing_id}

    async def ready() -> dict[str, bool]:
        return {}

    install_probes(app, ready)
    install_auth(app, settings)
    return app


def test_operations_of_an_included_router_declare_their_scope() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/things")
    async def things(_: LeadsReader) -> list[str]:
        return []

    app.include_router(router, prefix="/v1")
    install_auth(app, LeadflowSettings(api_keys=KEYS))
    operation = app.openapi()["paths"]["/v1/things"]["get"]
    assert operation["x-required-scope"] == "leads:read"
    assert operation["security"]


async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def protected() -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_of(scoped_app(LeadflowSettings(api_keys=KEYS))):
        yield client


async def test_401_names_the_problem_and_asks_for_bearer(protected: httpx.AsyncClient) -> None:
    missing = await protected.get("/v1/things/1")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "credentials are required" in missing.json()["detail"]
    unknown = await protected.get("/v1/things/1", headers={"Authorization": "Bearer lf_guess"})
    assert unknown.status_code == 401
    assert unknown.json() == {"detail": "unknown API key"}
    assert "lf_guess" not in unknown.text


async def test_403_names_the_caller_the_scope_and_the_operation(
    protected: httpx.AsyncClient,
) -> None:
    response = await protected.get("/v1/things/1", headers={"X-API-Key": MAILER_KEY})
    assert response.status_code == 403
    assert response.json() == {
        "detail": "key 'mailer' lacks scope leads:read needed for GET /v1/things/{thing_id}"
    }
    assert MAILER_KEY not in response.text
    erase = await protected.delete("/v1/things/1", headers={"X-API-Key": READER_KEY})
    assert erase.status_code == 403
    assert "lacks scope admin" in erase.json()["detail"]


async def test_a_proxy_s_authorization_leaves_the_api_key_header(
    protected: httpx.AsyncClient,
) -> None:
    headers = {"Authorization": "Basic cHJveHk6cHc=", "X-API-Key": READER_KEY}
    assert (await protected.get("/v1/things/1", headers=headers)).status_code == 200
    basic = await protected.get("/v1/things/1", headers={"Authorization": "Basic cHJveHk6cHc="})
    assert basic.status_code == 401  # proxy:pw is no key sent the Segment way (key:)
    assert "empty password" in basic.json()["detail"]


def basic(user: str, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_a_key_as_the_basic_user_name_with_an_empty_password_is_a_key(
    protected: httpx.AsyncClient,
) -> None:
    assert (await protected.get("/v1/things/1", headers=basic(READER_KEY))).status_code == 200
    unknown = await protected.get("/v1/things/1", headers=basic("lf_nope"))
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "unknown API key"
    assert "lf_nope" not in unknown.text
    as_password = await protected.get("/v1/things/1", headers=basic("", READER_KEY))
    assert as_password.status_code == 401
    assert READER_KEY not in as_password.text
    no_colon = "Basic " + base64.b64encode(b"no-colon").decode()
    not_utf8 = "Basic " + base64.b64encode(b"\xff\xfe:").decode()
    for garbage in ("Basic !!!", no_colon, not_utf8, "Basic "):
        refused = await protected.get("/v1/things/1", headers={"Authorization": garbage})
        assert refused.status_code == 401, garbage
    latin = await protected.get("/v1/things/1", headers={b"Authorization": b"Basic \xe9\xe9"})
    assert latin.status_code == 401


async def test_the_caller_is_in_request_state(protected: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": READER_KEY}, {"Authorization": f"Bearer {READER_KEY}"}):
        response = await protected.get("/v1/things/1", headers=headers)
        assert response.json() == {
            "thing": "1",
            "caller": "reader",
            "stored": ["reader", ["leads:read"]],
        }
    assert (await protected.delete("/v1/things/1", headers={"X-API-Key": ADMIN_KEY})).is_success


async def test_probes_stay_open_and_metrics_are_open_by_default(
    protected: httpx.AsyncClient,
) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert (await protected.get(path)).status_code == 200, path


async def test_metrics_can_be_protected_and_docs_turned_off() -> None:
    settings = LeadflowSettings(api_keys=KEYS, metrics_auth="protected", docs="off")
    async for client in client_of(scoped_app(settings)):
        assert (await client.get("/metrics")).status_code == 401
        refused = await client.get("/metrics", headers={"X-API-Key": READER_KEY})
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "key 'reader' lacks scope admin needed for GET /metrics"
        )
        assert (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404, path


async def test_without_configuration_loopback_stays_open() -> None:
    async for client in client_of(scoped_app(LeadflowSettings())):
        response = await client.get("/v1/things/1")
        assert response.json() == {"thing": "1", "caller": "anyone", "stored": None}
        assert (await client.delete("/v1/things/1")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert "securitySchemes" not in schema.get("components", {})
        assert all(
            "security" not in operation and "401" not in operation["responses"]
            for methods in schema["paths"].values()
            for operation in methods.values()
        )


async def test_keys_protect_loopback_too(protected: httpx.AsyncClient) -> None:
    assert (await protected.delete("/v1/things/1")).status_code == 401


async def test_the_document_declares_each_operation_s_scope(protected: httpx.AsyncClient) -> None:
    schema = (await protected.get("/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"ApiKeyHeader", "ApiKeyBearer"}
    read = schema["paths"]["/v1/things/{thing_id}"]["get"]
    erase = schema["paths"]["/v1/things/{thing_id}"]["delete"]
    assert (read["x-required-scope"], erase["x-required-scope"]) == ("leads:read", "admin")
    assert "Requires scope `admin`." in erase["description"]
    for operation in (read, erase):
        assert operation["security"] == [{"ApiKeyHeader": []}, {"ApiKeyBearer": []}]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert "403" in operation["responses"]
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in schema["paths"][probe]["get"]


async def test_protected_metrics_are_documented() -> None:
    settings = LeadflowSettings(api_keys=KEYS, metrics_auth="protected")
    async for client in client_of(scoped_app(settings)):
        schema = (await client.get("/openapi.json", headers={"X-API-Key": ADMIN_KEY})).json()
        assert schema["paths"]["/metrics"]["get"]["x-required-scope"] == "admin"
        assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_scoring_s_model_needs_leads_read() -> None:
    # The lifespan (the worker) is not started: the model route does not need it, and with
    # no broker to read publications from it answers the workers' model file.
    app = create_scoring(ScoringSettings(api_keys=KEYS, kafka_bootstrap_servers="127.0.0.1:1"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
        assert (await client.get("/v1/model")).status_code == 401
        refused = await client.get("/v1/model", headers={"X-API-Key": MAILER_KEY})
        assert refused.json()["detail"] == (
            "key 'mailer' lacks scope leads:read needed for GET /v1/model"
        )
        model = await client.get("/v1/model", headers={"X-API-Key": READER_KEY})
        assert model.json()["version"] == "default-1"
        operation = (await client.get("/openapi.json")).json()["paths"]["/v1/model"]["get"]
        assert operation["x-required-scope"] == "leads:read"
