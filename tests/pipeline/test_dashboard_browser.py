"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real pipeline server on loopback, with authentication on, over a SQLite database the
store seeds as the Kafka consumer would write it. Each test signs in through the form
as a person would, then reads the page: no console error (a CSP violation is one), the
numbers equal the API's, the live list grows without a reload, the filters filter. A
screenshot of each view is written to ``tests-artifacts/dashboard/``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
    expect,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from shared.database import Database
from shared.events import Stage
from tests.pipeline.conftest import ScratchDatabases
from tests.pipeline.records import score_update, stage_change
from tests.pipeline.test_app import KEYS, MAILER, READER
from tests.servers import serving

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]

CHROMIUM = os.environ.get("LEADFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTEFACTS = Path(__file__).resolve().parents[2] / "tests-artifacts" / "dashboard"
DEADLINE_MS = 20_000
"""How long a page may take to show what a test waits for (a loaded machine is slow)."""

# (lead, [(to_stage, from_stage)], total score)
JOURNEYS: list[tuple[str, list[tuple[Stage, Stage | None]], float]] = [
    ("ada@example.com", [(Stage.LEAD, None), (Stage.PROSPECT, Stage.LEAD)], 72.5),
    (
        "grace@example.com",
        [
            (Stage.LEAD, None),
            (Stage.PROSPECT, Stage.LEAD),
            (Stage.OPPORTUNITY, Stage.PROSPECT),
            (Stage.CUSTOMER, Stage.OPPORTUNITY),
        ],
        95.0,
    ),
    (
        "org/7/linus@example.org",
        [(Stage.LEAD, None), (Stage.OPPORTUNITY, Stage.LEAD)],
        88.0,
    ),
    ("bob@example.org", [(Stage.LEAD, None)], 12.0),
    ("carol@example.net", [(Stage.LEAD, None), (Stage.DISQUALIFIED, Stage.LEAD)], 3.0),
    ("dan@example.net", [(Stage.LEAD, None), (Stage.PROSPECT, Stage.LEAD)], 55.0),
]


SOURCES = ("webinar", "website", None)
"""The source of each lead's first event, in turn (None: it named none)."""


async def seed(sessions: Sessions) -> None:
    changes = [
        stage_change(lead, sequence, to, before, total=total).model_copy(
            update={"source": SOURCES[n % len(SOURCES)]}
        )
        for n, (lead, moves, total) in enumerate(JOURNEYS)
        for sequence, (to, before) in enumerate(moves, 1)
    ]
    scores = [
        score_update(lead, len(moves), total, moves[-1][0]) for lead, moves, total in JOURNEYS
    ]
    await store.record_batch(sessions, changes, scores)


@pytest.fixture
async def database_file(sqlite_databases: ScratchDatabases) -> AsyncIterator[Database]:
    url = await sqlite_databases.sibling().create()
    await migrate(url)
    database = Database.connect(url)
    yield database
    await database.dispose()


@pytest.fixture
async def pipeline(database_file: Database) -> AsyncIterator[str]:
    await seed(database_file.sessions)
    settings = PipelineSettings(
        database_url=database_file.engine.url.render_as_string(hide_password=False),
        pipeline_consume=False,
        stream_poll_seconds=0.1,
        api_keys=KEYS,
    )
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class Watched:
    """A page whose console errors, page errors and failed requests are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.set_default_timeout(DEADLINE_MS)

    def _failed(self, request: Request) -> None:
        # Leaving a page aborts its open event stream: that is no failure.
        if request.failure != "net::ERR_ABORTED":
            self.errors.append(f"request failed: {request.url} {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


@pytest.fixture
async def page(browser: Browser, pipeline: str) -> AsyncIterator[Watched]:
    """Closed before the server stops: an open event stream would hold its shutdown."""
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    watched = Watched(await context.new_page())
    yield watched
    await context.close()


@pytest.fixture
async def api(pipeline: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {READER}"}
    async with httpx.AsyncClient(base_url=pipeline, headers=headers) as client:
        yield client


async def sign_in(page: Page, base: str, path: str = "/dashboard", key: str = READER) -> None:
    await page.goto(base + path)
    await expect(page).to_have_url(f"{base}/dashboard/sign-in?next={quote(path, safe='/')}")
    await page.get_by_label("API key or token").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(base + path)
    await loaded(page)


async def loaded(page: Page) -> None:
    await expect(page.locator("body")).to_have_attribute("data-loaded", "true")


async def screenshot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def cell(page: Page, table: str, row: str, field: str) -> Any:
    return page.locator(f"#{table} tbody tr[{row}] td[data-field={field}]")


async def test_the_funnel_shows_the_api_numbers_without_console_errors(
    page: Watched, pipeline: str, api: httpx.AsyncClient
) -> None:
    await sign_in(page.page, pipeline)
    funnel = (await api.get("/v1/funnel")).raise_for_status().json()
    assert funnel["total_leads"] == len(JOURNEYS)
    await expect(page.page.locator("#total-leads")).to_have_text(str(funnel["total_leads"]))
    for stage in funnel["stages"]:
        row = f"data-stage={stage['stage']}"
        await expect(cell(page.page, "funnel", row, "current")).to_have_text(str(stage["current"]))
        await expect(cell(page.page, "funnel", row, "reached")).to_have_text(str(stage["reached"]))
    for conversion in funnel["conversions"]:
        row = f"data-from={conversion['from_stage']}][data-to={conversion['to_stage']}"
        rate = conversion["rate"]
        shown = "\N{EN DASH}" if rate is None else f"{round(rate * 100, 1):g}%"
        await expect(cell(page.page, "conversions", row, "rate")).to_have_text(shown)
    await screenshot(page.page, "funnel")
    assert page.errors == []


async def test_every_view_loads_without_console_errors(page: Watched, pipeline: str) -> None:
    await sign_in(page.page, pipeline, "/dashboard/cohorts")
    await screenshot(page.page, "cohorts")
    await page.page.get_by_role("link", name="Stage changes").click()
    await loaded(page.page)
    await screenshot(page.page, "stage-changes")
    await page.page.get_by_role("link", name="Leads", exact=True).click()
    await loaded(page.page)
    await screenshot(page.page, "leads")
    # On a wall screen: the same page, larger.
    await page.page.set_viewport_size({"width": 2560, "height": 1440})
    await page.page.get_by_role("link", name="Funnel").click()
    await loaded(page.page)
    await screenshot(page.page, "funnel-wall-screen")
    assert page.errors == []


async def test_a_new_stage_change_appears_in_the_live_list_without_a_reload(
    page: Watched, pipeline: str, database_file: Database
) -> None:
    await sign_in(page.page, pipeline, "/dashboard/changes")
    rows = page.page.locator("#live-changes tbody tr[data-position]")
    # The backlog arrives over the stream one event at a time: wait for all of it.
    before = sum(len(moves) for _, moves, _ in JOURNEYS)
    await expect(rows).to_have_count(before)
    await page.page.evaluate("window.notReloaded = true")

    await store.record_batch(
        database_file.sessions,
        [stage_change("bob@example.org", 2, Stage.PROSPECT, Stage.LEAD, total=61.0)],
        [],
    )
    newest = page.page.locator("#live-changes tbody tr").first
    await expect(newest).to_have_attribute("data-lead", "bob@example.org")
    await expect(newest).to_contain_text("prospect")
    await expect(rows).to_have_count(before + 1)
    assert await page.page.evaluate("window.notReloaded") is True
    await expect(page.page.locator("#live-status")).to_contain_text("Live")
    await screenshot(page.page, "stage-changes-live")
    assert page.errors == []


async def test_the_stage_and_score_filters(
    page: Watched, pipeline: str, api: httpx.AsyncClient
) -> None:
    await sign_in(page.page, pipeline, "/dashboard/leads")
    rows = page.page.locator("#leads tbody tr[data-lead]")
    await expect(rows).to_have_count(len(JOURNEYS))
    everyone = [lead["lead_id"] for lead in (await api.get("/v1/leads")).json()["items"]]
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.lead)") == everyone

    await page.page.get_by_label("Stage").select_option("prospect")
    await page.page.get_by_label("Minimum score").fill("60")
    await page.page.get_by_label("Minimum score").press("Enter")  # the keyboard submits
    await expect(page.page).to_have_url(
        f"{pipeline}/dashboard/leads?stage=prospect&min_score=60&limit=25"
    )
    await loaded(page.page)
    expected = (await api.get("/v1/leads", params={"stage": "prospect", "min_score": 60})).json()
    assert [lead["lead_id"] for lead in expected["items"]] == ["ada@example.com"]
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-lead", "ada@example.com")
    await expect(page.page.get_by_label("Stage")).to_have_value("prospect")
    await screenshot(page.page, "leads-filtered")

    await page.page.get_by_label("Minimum score").fill("99")
    await page.page.get_by_role("button", name="Filter").click()
    await loaded(page.page)
    await expect(page.page.locator("#leads tbody")).to_contain_text("No lead matches")
    assert page.errors == []


async def test_a_lead_page_shows_its_score_by_rule_and_its_history(
    page: Watched, pipeline: str, api: httpx.AsyncClient
) -> None:
    await sign_in(page.page, pipeline, "/dashboard/leads")
    await page.page.get_by_role("link", name="org/7/linus@example.org").click()
    await expect(page.page).to_have_url(f"{pipeline}/dashboard/leads/org/7/linus%40example.org")
    await loaded(page.page)
    await expect(page.page.get_by_role("heading", level=1)).to_have_text("org/7/linus@example.org")
    score = (await api.get("/v1/leads/org/7/linus@example.org/score")).json()
    for rule in score["breakdown"]:
        points = cell(page.page, "breakdown", f'data-rule="{rule["rule"]}"', "points")
        await expect(points).to_have_text(f"{round(rule['points'], 1):g}")
    history = (await api.get("/v1/leads/org/7/linus@example.org/history")).json()["items"]
    shown = page.page.locator("#history tbody tr[data-sequence]")
    await expect(shown).to_have_count(len(history))
    await expect(shown.last).to_contain_text("opportunity")
    await screenshot(page.page, "lead")
    assert page.errors == []


async def test_anonymous_access_is_refused_and_sign_out_ends_the_session(
    page: Watched, pipeline: str
) -> None:
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(f"{pipeline}/v1/funnel")
    assert anonymous.status_code == 401
    await page.page.goto(f"{pipeline}/dashboard/leads")
    await expect(page.page).to_have_url(f"{pipeline}/dashboard/sign-in?next=/dashboard/leads")
    await screenshot(page.page, "sign-in")

    await page.page.get_by_label("API key or token").fill("lf_not-a-key")
    await page.page.get_by_role("button", name="Sign in").click()
    await expect(page.page.get_by_role("alert")).to_have_text("unknown API key")
    await page.page.get_by_label("API key or token").fill(MAILER)
    await page.page.get_by_role("button", name="Sign in").click()
    await expect(page.page.get_by_role("alert")).to_contain_text("lacks scope leads:read")

    await page.page.get_by_label("API key or token").fill(READER)
    await page.page.get_by_label("API key or token").press("Enter")
    await expect(page.page).to_have_url(f"{pipeline}/dashboard/leads")
    await loaded(page.page)
    await expect(page.page.locator("header")).to_contain_text("Signed in as dashboard")
    cookies = {c["name"]: c for c in await page.page.context.cookies()}
    session = cookies["leadflow_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["expires"] > 0  # not a browser-session cookie: it has an expiry
    assert await page.page.evaluate("document.cookie") == ""  # no script can read them

    await page.page.get_by_role("button", name="Sign out").click()
    await expect(page.page).to_have_url(f"{pipeline}/dashboard/sign-in?signed-out=true")
    await expect(page.page.get_by_role("status")).to_have_text("You are signed out.")
    names = {c["name"] for c in await page.page.context.cookies()}
    assert "leadflow_session" not in names
    await page.page.goto(f"{pipeline}/dashboard")
    await expect(page.page).to_have_url(f"{pipeline}/dashboard/sign-in?next=/dashboard")
    status = await page.page.evaluate("fetch('/v1/funnel').then(r => r.status)")
    assert status == 401
    # The refusals above (a 401, a 403, a 401) are the only console errors.
    assert [error.split("status of ")[-1] for error in page.errors] == [
        "401 (Unauthorized)",
        "403 (Forbidden)",
        "401 (Unauthorized)",
    ]
