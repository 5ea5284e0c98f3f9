"""``/dashboard``: the funnel, its analytics, the live stage changes and the leads, as web
pages for people (docs/architecture.md §6).

The pages are Jinja2 templates that hold no lead data; a small script shipped with the
package (``web/static/dashboard.js``) fills them from the very REST API every other
client reads (``/v1/funnel``, ``/v1/analytics/...``, ``/v1/leads``, the SSE stream), so
the numbers on a page are the API's, and there is one place that computes each. The
browser authenticates those requests with the session cookie signing in sets
(:mod:`services.pipeline.sign_in`). Every page needs ``leads:read``, as every data route
does (:mod:`services.pipeline.pages`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator

from services.pipeline import store
from services.pipeline.pages import PREFIX, WEB, reader, render
from services.pipeline.settings import PipelineSettings
from services.pipeline.sign_in import install_sign_in
from shared.auth import Principal
from shared.database import Database
from shared.events import Stage, no_control_chars

RECENT_CHANGES = 20
"""How many of the newest stage changes the live list starts with."""

PageLeadId = Annotated[str, AfterValidator(no_control_chars), PathParam()]


def install_dashboard(app: FastAPI, settings: PipelineSettings) -> None:
    """The pages, their files and the sign-in. Call it after
    :func:`shared.auth.install_auth`: it makes the app's authenticator accept the
    session cookies that signing in sets."""
    install_sign_in(app, settings)

    def show(request: Request, principal: Principal | None, view: str, **context: Any) -> Response:
        return render(request, f"{view}.html", {"view": view, "principal": principal, **context})

    async def page(request: Request, view: str, **context: Any) -> Response:
        principal = await reader(request)
        if isinstance(principal, Response):
            return principal
        return show(request, principal, view, **context)

    @app.get(PREFIX, include_in_schema=False)
    async def overview(request: Request) -> Response:
        return await page(request, "overview", title="Funnel")

    @app.get(f"{PREFIX}/cohorts", include_in_schema=False)
    async def cohorts(request: Request) -> Response:
        return await page(request, "cohorts", title="Cohorts")

    @app.get(f"{PREFIX}/changes", include_in_schema=False)
    async def changes(request: Request) -> Response:
        principal = await reader(request)
        if isinstance(principal, Response):
            return principal
        database: Database = request.app.state.database
        async with database.sessions() as session:
            head = await store.feed_head(session)
        start = max(0, head - RECENT_CHANGES)
        return show(request, principal, "changes", title="Stage changes", after=start)

    @app.get(f"{PREFIX}/leads", include_in_schema=False)
    async def leads(request: Request) -> Response:
        return await page(
            request, "leads", title="Leads", stages=list(Stage), limit_max=settings.page_size_max
        )

    @app.get(f"{PREFIX}/leads/{{lead_id:path}}", include_in_schema=False)
    async def lead(request: Request, lead_id: PageLeadId) -> Response:
        return await page(request, "lead", title=lead_id, lead_id=lead_id)

    app.mount(f"{PREFIX}/static", StaticFiles(directory=WEB / "static"), name="dashboard-static")
