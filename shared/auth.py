"""Who may call the HTTP APIs: API keys and JWTs with scopes, on every service.

A caller sends one credential, as ``Authorization: Bearer <credential>`` or
``X-API-Key: <credential>``, or an API key as the user name of HTTP Basic with an empty
password (``Authorization: Basic base64(<key>:)``, how Segment and RudderStack SDKs send
their write key): an API key (see :mod:`shared.api_keys`) or, when a JWKS
URL is configured, a JWT (see :mod:`shared.jwks`). Each operation needs one scope.
No credential, an unknown key or an invalid token is a 401 naming the reason; a
credential without the scope is a 403 naming the scope and what it was needed for.
A credential is never echoed.

Authentication is on when keys or a JWKS are configured. With neither, a service
bound to loopback stays open (``make run``), and one bound elsewhere refuses to
start unless ``LEADFLOW_AUTH=disabled`` says so explicitly.

The caller is stored in ``request.state.principal`` for the access log; an open
service leaves it absent.

A person signs in once instead (the pipeline's dashboard): :meth:`Authenticator.sign_in`
checks the pasted key or token as a request's would be checked and seals a session
cookie (:mod:`shared.sessions`). An authenticator that accepts sessions takes that cookie
in place of a credential header, on GET and HEAD only: a cookie a browser sends by
itself can then read, never change anything (no cross-site request forgery of writes).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.api_keys import ApiKey, KeyLineError, find_key, parse_keys, split_lines
from shared.events import CRM_EVENT_TYPES
from shared.jwks import InvalidToken, JwksVerifier, KeySetUnavailable, TokenRules, looks_like_jwt
from shared.sessions import SESSION_COOKIE, SessionSeal
from shared.settings import LeadflowSettings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")

SCHEME_KEY_HEADER = "ApiKeyHeader"
SCHEME_KEY_BEARER = "ApiKeyBearer"
SCHEME_JWT = "JWT"


class AuthConfigurationError(ValueError):
    """The service must not start with this configuration; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: a key's name or a token's subject, and what they may do."""

    name: str
    scopes: frozenset[str]
    kind: str = "key"
    """``key`` or ``token``: which word the 403 uses."""
    expires_at: float | None = None
    """When the token expires (seconds since the epoch); None for keys."""


def unauthenticated(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(principal: Principal, scope: str, what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"{principal.kind} {principal.name!r} lacks scope {scope} needed for {what}",
    )


NO_CREDENTIALS = (
    f"credentials are required: send Authorization: Bearer <key or token>, {API_KEY_HEADER},"
    " or the key as the Basic user name"
)


def _basic_user(value: str) -> str:
    """The user name of a Basic credential: the key; its password must be empty, so a
    key sent as the password (where it would be ignored) is refused rather than guessed."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("ascii")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 text
        raise unauthenticated("the Basic credential is not base64 of key:") from None
    user, colon, password = decoded.partition(":")
    if not colon or password:
        raise unauthenticated("send the API key as the Basic user name with an empty password")
    return user.strip()


def _credential(headers: Headers) -> str:
    """The one credential sent, or a 401: a Bearer or Basic ``Authorization`` first, then
    ``X-API-Key`` (another scheme in ``Authorization`` may be a proxy's). ASCII only:
    keys and tokens are, and compare_digest refuses other str."""
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        credential = value.strip()
    elif scheme.lower() == "basic" and not headers.get(API_KEY_HEADER):
        credential = _basic_user(value)
    else:
        credential = (headers.get(API_KEY_HEADER) or "").strip()
        if not credential and scheme:
            raise unauthenticated("the Authorization header must use the Bearer or Basic scheme")
    if not credential:
        raise unauthenticated(NO_CREDENTIALS)
    if not credential.isascii():
        raise unauthenticated("unknown API key")
    return credential


SESSION_METHODS = frozenset({"GET", "HEAD"})
"""The only methods a session cookie authenticates: reads."""


def secure_cookies(connection: HTTPConnection) -> bool:
    """Whether cookies for this request must be ``Secure``: always, but for plain HTTP to a
    loopback host (``make run``), where a browser would not send a Secure cookie back."""
    url = connection.url
    return not (url.scheme == "http" and is_loopback(url.hostname or ""))


def cookie_name(connection: HTTPConnection, base: str = SESSION_COOKIE) -> str:
    """``base``, prefixed ``__Host-`` whenever the cookie is Secure: a browser then takes it
    only from this very host over HTTPS, for ``Path=/`` and no ``Domain``, so a sibling
    subdomain cannot plant one."""
    return f"__Host-{base}" if secure_cookies(connection) else base


def _has_credential(headers: Headers) -> bool:
    return bool(headers.get("authorization") or headers.get(API_KEY_HEADER))


class Authenticator:
    """The configured keys and token verifier; ``enabled`` when there is either."""

    def __init__(self, keys: Mapping[bytes, ApiKey], verifier: JwksVerifier | None) -> None:
        self.keys = keys
        self.verifier = verifier
        self.sessions: SessionSeal | None = None
        """Set by a service that signs people in; None: session cookies are ignored."""
        self._callers = {digest: Principal(key.name, key.scopes) for digest, key in keys.items()}

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.verifier is not None

    async def authenticate(self, headers: Headers, session: str | None = None) -> Principal | None:
        """The caller, a 401, or None when authentication is off.

        ``session``: a session cookie's value, used when no credential header is sent
        (the caller passes it only for reads, see :data:`SESSION_METHODS`).
        """
        if not self.enabled:
            return None
        if session is not None and self.sessions is not None and not _has_credential(headers):
            return self._session(self.sessions, session)
        return await self._caller(_credential(headers))

    async def _caller(self, credential: str) -> Principal:
        if self.verifier is not None and looks_like_jwt(credential):
            return await self._token(self.verifier, credential)
        key = find_key(self.keys, credential.encode())
        if key is None:
            raise unauthenticated("unknown API key")
        return self._callers[key.digest]

    async def sign_in(self, credential: str) -> tuple[Principal, str, float]:
        """The caller ``credential`` (a pasted key or token) names, the session cookie's
        value for it and when that expires; a 401 as a request with it would get."""
        if self.sessions is None:
            raise RuntimeError("this authenticator does not sign people in")
        credential = credential.strip()
        if not credential:
            raise unauthenticated("paste an API key or a token")
        if not credential.isascii():
            raise unauthenticated("unknown API key")
        principal = await self._caller(credential)
        if principal.kind == "token":
            session, value = self.sessions.issue(
                "token", principal.name, principal.scopes, principal.expires_at
            )
        else:
            key = find_key(self.keys, credential.encode())
            assert key is not None  # _caller found it
            session, value = self.sessions.issue("key", key.digest.hex(), frozenset())
        return principal, value, session.expires_at

    def _session(self, sessions: SessionSeal, value: str) -> Principal:
        session = sessions.open(value)
        if session is None:
            raise unauthenticated("the session has expired or is not valid: sign in again")
        if session.kind == "token":
            if self.verifier is None:
                raise unauthenticated("tokens are no longer accepted: sign in again")
            return Principal(session.name, session.scopes, "token", session.expires_at)
        try:
            caller = self._callers.get(bytes.fromhex(session.name))
        except ValueError:
            caller = None
        if caller is None:
            raise unauthenticated("the key of this session is no longer configured: sign in again")
        return caller

    async def _token(self, verifier: JwksVerifier, token: str) -> Principal:
        try:
            claims = await verifier.verify(token)
        except InvalidToken as exc:
            raise unauthenticated(f"invalid token: {exc}") from None
        except KeySetUnavailable as exc:
            log.warning("the JWKS at %s could not be fetched: %s", verifier.url, exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the token issuer's keys cannot be fetched now; retry later",
                headers={"Retry-After": "5"},
            ) from None
        return Principal(claims.subject, claims.scopes, kind="token", expires_at=claims.expires_at)

    def require(self, principal: Principal | None, scope: str, what: str) -> None:
        """A 403 unless ``principal`` has ``scope``; nothing when authentication is off."""
        if principal is not None and scope not in principal.scopes:
            raise forbidden(principal, scope, what)


def load_keys(settings: LeadflowSettings) -> dict[bytes, ApiKey]:
    lines = [
        (f"LEADFLOW_API_KEYS entry {n}", line)
        for n, line in enumerate(split_lines(settings.api_keys), 1)
    ]
    path = settings.api_keys_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigurationError(
                f"LEADFLOW_API_KEYS_FILE cannot be read: {exc.strerror}"
            ) from None
        in_file = [(f"LEADFLOW_API_KEYS_FILE line {n}", line) for n, line in _numbered(text)]
        if not in_file:
            raise AuthConfigurationError(f"LEADFLOW_API_KEYS_FILE {path} holds no key")
        lines += in_file
    try:
        return parse_keys(lines)
    except KeyLineError as exc:
        raise AuthConfigurationError(str(exc)) from None


def _numbered(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def load_authenticator(settings: LeadflowSettings) -> Authenticator:
    """The authenticator ``settings`` describe; an :class:`AuthConfigurationError` if it
    must not start (bad key lines, or no protection on a public address)."""
    if settings.auth == "disabled":
        return Authenticator({}, None)
    verifier = None
    if settings.jwt_jwks_url:
        assert settings.jwt_issuer  # the settings validate both
        assert settings.jwt_audience
        rules = TokenRules(
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_scope_claim,
            settings.jwt_leeway_seconds,
        )
        verifier = JwksVerifier(
            settings.jwt_jwks_url,
            rules,
            cache_seconds=settings.jwt_jwks_cache_seconds,
            refresh_min_seconds=settings.jwt_jwks_refresh_min_seconds,
        )
    authenticator = Authenticator(load_keys(settings), verifier)
    if not authenticator.enabled and not is_loopback(settings.host):
        raise AuthConfigurationError(
            f"refusing to serve on {settings.host} (LEADFLOW_HOST is not a loopback address) "
            "with no API keys (LEADFLOW_API_KEYS, LEADFLOW_API_KEYS_FILE) and no JWKS "
            "(LEADFLOW_JWT_JWKS_URL): anyone could call it. Configure keys "
            "(leadflow keys create), or set LEADFLOW_AUTH=disabled to serve without "
            "authentication on purpose."
        )
    return authenticator


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class RequireScope:
    """A FastAPI dependency: the caller must have ``scope`` (when authentication is on).

    ``Depends(RequireScope("admin"))``, or the aliases below. The route's OpenAPI
    operation then declares the security and the scope (see :func:`install_auth`), with
    ``note`` added to the scope's sentence. A :class:`HandledRoute`-style operation that
    FastAPI does not solve dependencies for may declare it for the document and enforce
    the same itself.
    """

    def __init__(self, scope: str, note: str = "") -> None:
        self.scope = scope
        self.note = note

    async def __call__(self, request: Request) -> Principal | None:
        authenticator: Authenticator = request.app.state.authenticator
        session = None
        if authenticator.sessions is not None and request.method in SESSION_METHODS:
            session = request.cookies.get(cookie_name(request))
        principal = await authenticator.authenticate(request.headers, session)
        if principal is None:
            return None
        request.state.principal = principal
        authenticator.require(principal, self.scope, operation_name(request))
        return principal


def operation_name(request: Request) -> str:
    """``GET /v1/leads/{lead_id}``: the route's template, never the caller's path."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def event_scope(event_type: str) -> str:
    """The scope posting an event of ``event_type`` needs."""
    return "crm:write" if event_type in CRM_EVENT_TYPES else "events:write"


def require_event_scopes(principal: Principal | None, event_types: Iterable[str]) -> None:
    """A 403 naming the first event type ``principal`` may not post; check every event of
    a request before any is published."""
    if principal is None:
        return
    for event_type in event_types:
        scope = event_scope(event_type)
        if scope not in principal.scopes:
            raise forbidden(principal, scope, event_type)


LeadsReader = Annotated[Principal | None, Depends(RequireScope("leads:read"))]
"""The caller of a read of lead data (``leads:read``); None when authentication is off."""

Admin = Annotated[Principal | None, Depends(RequireScope("admin"))]
"""The caller of a management endpoint (``admin``); None when authentication is off."""


def install_auth(
    app: FastAPI, settings: LeadflowSettings, authenticator: Authenticator | None = None
) -> Authenticator:
    """Authentication for ``app``.

    Routes that use :class:`RequireScope` are enforced by FastAPI and declared in the
    OpenAPI document. Removes the docs when ``LEADFLOW_DOCS=off``, guards ``/metrics``
    with ``admin`` when ``LEADFLOW_METRICS_AUTH=protected``.
    """
    authenticator = authenticator or load_authenticator(settings)
    app.state.authenticator = authenticator
    _warn_when_disabled(app, settings)
    if settings.docs == "off":
        app.router.routes[:] = [r for r in app.router.routes if _path(r) not in DOCS_PATHS]
        app.openapi_url = app.docs_url = app.redoc_url = None
    guarded: dict[tuple[str, str], RequireScope] = {}
    if authenticator.enabled and settings.metrics_auth == "protected":
        for route in app.router.routes:
            if isinstance(route, Route) and route.path == "/metrics":
                route.app = _guarded(route.app, authenticator, "admin", "GET /metrics")
                guarded[("get", "/metrics")] = RequireScope("admin")
    _document_security(app, authenticator, guarded)
    return authenticator


def _path(route: BaseRoute) -> str | None:
    return getattr(route, "path", None)


def _warn_when_disabled(app: FastAPI, settings: LeadflowSettings) -> None:
    if settings.auth != "disabled":
        return
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        log.warning(
            "LEADFLOW_AUTH=disabled: every API of this service is open to anyone who can reach %s",
            settings.host,
        )
        async with started(app) as state:
            yield state

    app.router.lifespan_context = lifespan


def _guarded(inner: ASGIApp, authenticator: Authenticator, scope: str, what: str) -> ASGIApp:
    """``inner`` behind a scope check, for routes that are not FastAPI operations."""

    async def app(asgi_scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(asgi_scope)
        try:
            principal = await authenticator.authenticate(request.headers)
            if principal is not None:
                request.state.principal = principal
            authenticator.require(principal, scope, what)
        except HTTPException as exc:
            refusal = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
            await refusal(asgi_scope, receive, send)
            return
        await inner(asgi_scope, receive, send)

    return app


# --- the OpenAPI document says what is enforced -------------------------------------------

_PROBLEM = {
    "type": "object",
    "properties": {"detail": {"type": "string", "minLength": 1}},
    "required": ["detail"],
}


def _refusal(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _PROBLEM}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _route_scope(dependant: Dependant) -> RequireScope | None:
    if isinstance(dependant.call, RequireScope):
        return dependant.call
    for child in dependant.dependencies:
        found = _route_scope(child)
        if found is not None:
            return found
    return None


def _security_schemes(authenticator: Authenticator) -> dict[str, dict[str, Any]]:
    schemes: dict[str, dict[str, Any]] = {}
    if authenticator.keys:
        schemes[SCHEME_KEY_HEADER] = {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
            "description": "A leadflow API key (leadflow keys create).",
        }
        schemes[SCHEME_KEY_BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A leadflow API key as a bearer token.",
        }
    if authenticator.verifier is not None:
        schemes[SCHEME_JWT] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT of the configured issuer; scopes in its "
            f"{authenticator.verifier.rules.scope_claim!r} claim.",
        }
    return schemes


def _document_security(
    app: FastAPI, authenticator: Authenticator, guarded: dict[tuple[str, str], RequireScope]
) -> None:
    """Declare the security of each protected operation when the document is first built,
    so routes added after :func:`install_auth` are declared as well."""
    if not authenticator.enabled:
        return
    previous: Callable[[], dict[str, Any]] = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = previous()
        if not done:
            _declare(schema, _security_schemes(authenticator), {**_scopes(app), **guarded})
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _scopes(app: FastAPI) -> dict[tuple[str, str], RequireScope]:
    """The scope each operation needs, included routers' operations too: FastAPI (from
    0.16x) keeps an included router as one entry of the route table, so it is walked as
    FastAPI's own OpenAPI generation walks it."""
    found = {}
    for route in _api_routes(app):
        required = _route_scope(route.dependant)
        if required is not None:
            for method in route.methods or ():
                found[(method.lower(), route.path_format)] = required
    return found


def _api_routes(app: FastAPI) -> list[Any]:
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if contexts is None:  # an older FastAPI: included routes are copied into the table
        return [r for r in app.router.routes if isinstance(r, APIRoute)]
    return [c for c in contexts(app.router.routes) if isinstance(c.original_route, APIRoute)]


def _declare(
    schema: dict[str, Any],
    schemes: dict[str, dict[str, Any]],
    scopes: Mapping[tuple[str, str], RequireScope],
) -> None:
    schema.setdefault("components", {})["securitySchemes"] = schemes
    requirement: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    for (method, path), required in scopes.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        scope = required.scope
        operation["security"] = requirement
        operation["x-required-scope"] = scope
        note = f"Requires scope `{scope}`{required.note}."
        description = operation.get("description")
        operation["description"] = f"{description}\n\n{note}" if description else note
        responses = operation.setdefault("responses", {})
        responses["401"] = _refusal(
            "No credentials, an unknown API key or an invalid token; the detail says which",
            **{"WWW-Authenticate": "Bearer"},
        )
        responses["403"] = _refusal(f"The key or token lacks scope {scope}")
        if SCHEME_JWT in schemes:
            responses.setdefault(
                "503",
                _refusal(
                    "The token issuer's keys cannot be fetched now",
                    **{"Retry-After": "Seconds to wait before retrying."},
                ),
            )
