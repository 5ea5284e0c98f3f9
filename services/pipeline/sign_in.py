"""Signing in to the dashboard with an API key or a JWT, and signing out.

A person pastes a key or token once into the form; the server checks it as it checks a
request's credential (:meth:`shared.auth.Authenticator.sign_in`), requires
``leads:read``, and sets a session cookie: ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page makes the browser send it), ``Secure`` and
``__Host-`` named except over plain HTTP on loopback, with the session's expiry. The
cookie then authenticates the dashboard's reads of the API (GET and HEAD only).

Signing in and out are the only requests that change anything here, so they are the
only ones checked against forgery, twice: the ``Origin`` a browser sends with a POST
must be this server's own, and the form must repeat the form token of
:mod:`services.pipeline.pages`. Signing in sets a new form token, so one planted before
cannot follow the session.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response

from services.pipeline.pages import PREFIX, READ, SIGN_IN, render, set_csrf_cookie
from services.pipeline.settings import PipelineSettings
from shared.auth import Authenticator, cookie_name, secure_cookies
from shared.sessions import CSRF_COOKIE, SessionSeal

SIGN_OUT = f"{PREFIX}/sign-out"
MAX_FORM_BYTES = 16 * 1024
"""A JWT with many claims still fits; the form holds nothing else of size."""


class ForgedRequest(Exception):
    """The form did not come from this server's own page; the message says how it differs."""


def local_target(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of this server, never elsewhere."""
    if not target or not target.startswith(PREFIX) or target.startswith("//"):
        return PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return PREFIX
    return target


def check_origin(origin: str | None, fetch_site: str | None, host: str | None) -> None:
    """A :class:`ForgedRequest` unless the POST came from a page of ``host``.

    Browsers send ``Origin`` with every POST; one from this host's own page names it. A
    request with neither ``Origin`` nor ``Sec-Fetch-Site`` comes from no browser (a
    script), which cannot be forged on a person's behalf; the form token still applies.
    """
    if origin is None:
        if fetch_site not in (None, "same-origin", "none"):
            raise ForgedRequest(f"the form was sent from a {fetch_site} page")
        return
    if origin == "null" or host is None or urlsplit(origin).netloc.lower() != host.lower():
        raise ForgedRequest("the form was sent from another site's page")


def check_form_token(sent: str | None, expected: str | None) -> None:
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise ForgedRequest("the form has expired; try again")


def load_seal(settings: PipelineSettings) -> SessionSeal:
    secret = settings.dashboard_session_secret
    key = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
    return SessionSeal(key, settings.dashboard_session_hours * 3600)


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (the first value of each), bounded in size."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the sign-in form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the form is too large")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the form is not valid") from None
    return {name: values[0] for name, values in fields.items()}


def check_forgery(request: Request, form: dict[str, str]) -> None:
    check_origin(
        request.headers.get("origin"),
        request.headers.get("sec-fetch-site"),
        request.headers.get("host"),
    )
    check_form_token(form.get("csrf"), request.cookies.get(cookie_name(request, CSRF_COOKIE)))


def install_sign_in(app: FastAPI, settings: PipelineSettings) -> None:
    authenticator: Authenticator = app.state.authenticator
    seal = load_seal(settings)
    authenticator.sessions = seal

    def form(
        request: Request, target: str, code: int = 200, error: str | None = None, note: str = ""
    ) -> Response:
        context = {
            "view": "sign-in",
            "title": "Sign in",
            "next": target,
            "error": error,
            "note": note,
        }
        return render(request, "sign_in.html", context, code)

    @app.get(SIGN_IN, include_in_schema=False)
    async def sign_in_form(
        request: Request,
        target: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
        signed_out: Annotated[bool, Query(alias="signed-out")] = False,
    ) -> Response:
        if not authenticator.enabled:
            return RedirectResponse(local_target(target), status.HTTP_303_SEE_OTHER)
        note = "You are signed out." if signed_out else ""
        return form(request, local_target(target), note=note)

    @app.post(SIGN_IN, include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        fields = await read_form(request)
        target = local_target(fields.get("next"))
        try:
            check_forgery(request, fields)
        except ForgedRequest as exc:
            return form(request, target, status.HTTP_403_FORBIDDEN, str(exc))
        if not authenticator.enabled:
            return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        try:
            principal, value, expires_at = await authenticator.sign_in(fields.get("credential", ""))
            authenticator.require(principal, READ.scope, "the dashboard")
        except HTTPException as exc:
            return form(request, target, exc.status_code, str(exc.detail))
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            cookie_name(request),
            value,
            max_age=max(1, int(expires_at - seal.clock())),
            path="/",
            secure=secure_cookies(request),
            httponly=True,
            samesite="strict",
        )
        set_csrf_cookie(request, response, secrets.token_urlsafe(32))
        return response

    @app.post(SIGN_OUT, include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        fields = await read_form(request)
        try:
            check_forgery(request, fields)
        except ForgedRequest as exc:
            return form(request, PREFIX, status.HTTP_403_FORBIDDEN, str(exc))
        response = RedirectResponse(f"{SIGN_IN}?signed-out=true", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(
            cookie_name(request),
            path="/",
            secure=secure_cookies(request),
            httponly=True,
            samesite="strict",
        )
        return response
