"""What every dashboard page shares: its templates, its CSP, the form token, and the gate
that sends a person without a session to the sign-in form.

The pages carry their own Content-Security-Policy: scripts, styles, images and requests
from this origin only, no inline script or style, no framing. The API keeps its
``default-src 'none'``: :mod:`shared.security_headers` adds that only where a response
sets no policy of its own.

The form token guards the only two requests that change anything, signing in and
signing out (:mod:`services.pipeline.sign_in`): a random value in a ``SameSite=Strict``,
``HttpOnly`` cookie that each form repeats in a hidden field (a double submit); another
site can neither read the cookie nor make the browser send it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from shared.auth import Authenticator, Principal, RequireScope, cookie_name, secure_cookies
from shared.sessions import CSRF_COOKIE

WEB = Path(__file__).parent / "web"
PREFIX = "/dashboard"
SIGN_IN = f"{PREFIX}/sign-in"

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The pages' CSP: nothing from elsewhere, nothing inline."""

REFERRER_POLICY = "same-origin"
"""Lead ids in the pages' addresses go to no other site; but a form posted from a page
carries its ``Origin`` (under ``no-referrer`` a browser sends ``Origin: null``), which
the sign-in checks."""

VIEWS = (
    ("overview", PREFIX, "Funnel"),
    ("cohorts", f"{PREFIX}/cohorts", "Cohorts"),
    ("changes", f"{PREFIX}/changes", "Stage changes"),
    ("leads", f"{PREFIX}/leads", "Leads"),
)
"""The navigation: view name, path, label."""

READ = RequireScope("leads:read")

templates = Jinja2Templates(directory=WEB / "templates")


def csrf_token(request: Request) -> tuple[str, bool]:
    """This browser's form token, and whether it is new (then the response sets it)."""
    existing = request.cookies.get(cookie_name(request, CSRF_COOKIE))
    if existing and len(existing) >= 32:
        return existing, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        cookie_name(request, CSRF_COOKIE),
        token,
        path="/",
        secure=secure_cookies(request),
        httponly=True,
        samesite="strict",
    )


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    status_code: int = status.HTTP_200_OK,
    csrf: tuple[str, bool] | None = None,
) -> HTMLResponse:
    """A page with the dashboard's CSP and this browser's form token."""
    token, new = csrf or csrf_token(request)
    authenticator: Authenticator = request.app.state.authenticator
    response = templates.TemplateResponse(
        request,
        template,
        {
            "views": VIEWS,
            "csrf": token,
            "auth_enabled": authenticator.enabled,
            "principal": None,
            **context,
        },
        status_code=status_code,
    )
    response.headers["content-security-policy"] = POLICY
    response.headers["referrer-policy"] = REFERRER_POLICY
    if new:
        set_csrf_cookie(request, response, token)
    return response


def sign_in_first(request: Request) -> RedirectResponse:
    """To the sign-in form, which comes back here once signed in."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{SIGN_IN}?next={quote(here, safe='/')}", status.HTTP_303_SEE_OTHER)


async def reader(request: Request) -> Principal | Response | None:
    """The signed-in reader (None when authentication is off), else the response to send
    instead: a redirect to the sign-in form (no session, or an expired one), or the form
    saying which scope is missing (403)."""
    try:
        return await READ(request)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            return sign_in_first(request)
        if exc.status_code == status.HTTP_403_FORBIDDEN:
            context = {"view": "sign-in", "title": "Sign in", "error": exc.detail, "next": PREFIX}
            return render(request, "sign_in.html", context, status.HTTP_403_FORBIDDEN)
        raise
