"""pipeline's HTTP surface (docs/architecture.md §6): leads, history, score, funnel, feed and
accounts (:mod:`services.pipeline.accounts_api`).

Reads only, but for erasing a lead (:mod:`services.pipeline.erasures`): the Kafka consumer
writes through :func:`services.pipeline.store.record_batch`.

Lead ids are arbitrary strings (often emails), so routes take them with a
``path`` converter: ``/v1/leads/ada@example.com`` works as is, and so does an
id with slashes. Percent-encode anything else (``?``, ``#``, ``%``, spaces).
The suffixes ``/history`` and ``/score`` are matched first, so the lead ids
``x/history`` and ``x/score`` cannot be fetched by the plain lead route; find
them through the listing instead.

An alias (an anonymous id merged into a known lead: :mod:`services.pipeline.aliases`)
names that lead on the lead, history and score routes: the answer is the known lead's,
``lead_id`` its own id, with ``requested_alias`` the id asked for (null otherwise), so a
CRM holding the visitor's id finds the person without following a redirect.
"""

# No ``from __future__ import annotations``: the routes' query types are built from the
# settings inside create_app, and FastAPI can only resolve string annotations from globals.
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from pydantic import AfterValidator
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline import aliases, lead_reads, store
from services.pipeline.accounts_api import install_accounts
from services.pipeline.analytics_api import Moment, install_analytics
from services.pipeline.api_models import (
    LeadAnswer,
    LeadPage,
    ScoreBreakdown,
    StageChangeFeed,
    StageHistory,
)
from services.pipeline.consumer import PipelineConsumer
from services.pipeline.dashboard import install_dashboard
from services.pipeline.erasures import install_erasures
from services.pipeline.listing_params import (
    SCORE_ORDER_CURSOR,
    page_limit,
    refuse_cursor_beside_updated_after,
    updated_after_query,
)
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from services.pipeline.stream import install_stream
from shared import lead_ids
from shared.api_models import Problem
from shared.auth import RequireScope, install_auth
from shared.background import BackgroundLoop
from shared.database import Database
from shared.database_outage import DATABASE_DOWN, install_database_outage
from shared.errors import invalid_query as _invalid_query
from shared.events import NO_CONTROL_CHARS_PATTERN, Stage, no_control_chars
from shared.http_edge import install_http_edge
from shared.probes import install_probes


def app_database(app: FastAPI) -> Database:
    """The database the lifespan opened; an error, not ``None``, if it has not run."""
    database = getattr(app.state, "database", None)
    if not isinstance(database, Database):
        raise RuntimeError("the pipeline app's lifespan has not started")
    return database


async def get_database(request: Request) -> Database:
    """Async although it awaits nothing: FastAPI runs a plain function in a worker thread,
    a thread hop on every request."""
    return app_database(request.app)


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One session per request: sessions are not safe to share between tasks."""
    async with database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_UNKNOWN_LEAD: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown lead"}
}

LeadId = Annotated[
    str,
    AfterValidator(no_control_chars),
    Path(
        description=(
            "The lead's id, as events name it (often an email). `@` and `/` may stay as they "
            "are; percent-encode `?`, `#`, `%` and spaces. Control characters are refused."
        ),
        json_schema_extra={"pattern": NO_CONTROL_CHARS_PATTERN},
        openapi_examples={
            "email": {"summary": "An email", "value": "ada@example.com"},
            "slashes": {"summary": "An id with slashes", "value": "org/7/ada@x.io"},
        },
    ),
]
"""A lead id in a path. Ids come from events, which never hold control characters; refusing
them here also keeps NUL away from PostgreSQL, whose text cannot hold it."""

AsOf = Annotated[
    Moment | None,
    Query(
        description=(
            "Value engagement and total at this time (RFC 3339) instead of now: engagement "
            "decays between events. A lead whose latest event is later shows its score at "
            "that event."
        )
    ),
]


def _moment(as_of: datetime | None) -> datetime:
    return datetime.now(UTC) if as_of is None else as_of


READS = [Depends(RequireScope("leads:read"))]
"""Every read of lead data needs leads:read (when authentication is on)."""

ADMIN = [Depends(RequireScope("admin"))]
"""Erasing a lead, and its status, need admin."""

MAX_POSITION = 2**63 - 1
"""Feed positions are 64-bit integers in both databases."""


LISTING_MODES = """\
Two orders, one route:

- **Score order** (no `updated_after`): leads by total, highest first, ties by lead id;
  page with `cursor`. A lead whose score changes between pages may be seen twice or
  missed once: for dashboards, not for syncing.
- **Change order** (`updated_after`): the leads whose score or stage was written since
  the cursor, in the order written, ties by lead id. Start with `updated_after=0`, then
  pass each page's `next_cursor` as the next `updated_after`, until a page comes back
  empty; an empty page returns the cursor it was given, so keep it for the next run. A
  lead written again later comes back again with its newer state; none is skipped, even
  while writes go on. `cursor` cannot be combined with it (422).

`stage` and `min_score` filter both orders on the lead's state now: in change order a
lead that left the stage is not listed, so a sync job that mirrors every lead omits them.
An erased lead is no longer listed in either order; a mirror that must drop erased
leads learns of them from the `leadflow.stage-changes` and `leadflow.scores` records.
"""


def _unknown_lead(lead_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"lead {lead_id!r} is unknown")


def create_app(settings: PipelineSettings | None = None) -> FastAPI:
    settings = settings or PipelineSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate(settings.database_url)
        database = Database.connect(
            settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        app.state.database = database
        consumer = BackgroundLoop(
            "pipeline-consumer", lambda: PipelineConsumer(settings, database), settings
        )
        app.state.consumer = consumer
        if settings.pipeline_consume:
            consumer.start()
        try:
            yield
        finally:
            await consumer.stop()
            del app.state.database
            await database.dispose()

    app = FastAPI(
        title="leadflow pipeline",
        version="1",
        summary="Leads' scores, stages and stage history, for ops and CRMs.",
        lifespan=lifespan,
        responses=DATABASE_DOWN,
    )
    install_database_outage(app)

    async def readiness() -> Mapping[str, bool]:
        database = app_database(app)
        consumer: BackgroundLoop[PipelineConsumer] = app.state.consumer
        writing = consumer.loop is None or consumer.loop.database_ok
        reachable = await database.is_reachable(settings.readiness_timeout_seconds)
        checks = {"database": writing and reachable}
        if settings.pipeline_consume:
            checks["consumer"] = consumer.consuming()
            checks["kafka"] = await consumer.kafka_ready()
        return checks

    def alive() -> bool:
        consumer: BackgroundLoop[PipelineConsumer] | None = getattr(app.state, "consumer", None)
        return consumer is None or consumer.alive()

    install_probes(app, readiness, alive)
    install_http_edge(app, settings)

    Limit = Annotated[int, page_limit(settings)]

    @app.get(
        "/v1/leads",
        summary="Leads by total score, highest first; or, with updated_after, in change order",
        description=LISTING_MODES,
        tags=["leads"],
        dependencies=READS,
    )
    async def list_leads(
        session: SessionDep,
        stage: Annotated[Stage | None, Query(description="Only leads in this stage.")] = None,
        min_score: Annotated[
            float | None,
            Query(allow_inf_nan=False, description="Only leads whose valued total is >= this."),
        ] = None,
        as_of: AsOf = None,
        limit: Limit = settings.page_size_default,
        cursor: Annotated[str | None, SCORE_ORDER_CURSOR] = None,
        updated_after: Annotated[
            str | None,
            updated_after_query("lead", "leads whose score or stage was written"),
        ] = None,
    ) -> LeadPage:
        if updated_after is not None:
            refuse_cursor_beside_updated_after(cursor)
            try:
                return await lead_reads.changed_leads(
                    session,
                    _moment(as_of),
                    updated_after=updated_after,
                    stage=stage,
                    min_score=min_score,
                    limit=limit,
                )
            except store.InvalidCursor as exc:
                raise _invalid_query(
                    "updated_after",
                    updated_after,
                    f"updated_after {exc}; pass 0 to sync from the start",
                ) from exc
        if as_of is not None and cursor is not None:
            raise _invalid_query(
                "as_of",
                as_of.isoformat(),
                "as_of cannot be combined with cursor: a cursor pages at the moment of its "
                "first page",
            )
        try:
            return await lead_reads.list_leads(
                session,
                _moment(as_of),
                stage=stage,
                min_score=min_score,
                limit=limit,
                cursor=cursor,
            )
        except store.InvalidCursor as exc:
            raise _invalid_query("cursor", cursor, f"cursor {exc}; start again without it") from exc

    # The suffixed routes come first: the path converter would otherwise swallow them.
    @app.get(
        "/v1/leads/{lead_id:path}/history",
        dependencies=READS,
        summary="The lead's stage changes, in sequence order",
        responses=_UNKNOWN_LEAD,
        tags=["leads"],
    )
    async def lead_history(lead_id: LeadId, session: SessionDep) -> StageHistory:
        lead_id = lead_ids.normalize(lead_id, settings.lead_id_normalization)
        known = await aliases.resolve(session, lead_id)
        found = await store.history(session, known or lead_id)
        if found is None:
            raise _unknown_lead(lead_id)
        merges = await aliases.merges_into(session, found.lead_id)
        return found.model_copy(update={"requested_alias": known and lead_id, "merges": merges})

    @app.get(
        "/v1/leads/{lead_id:path}/score",
        dependencies=READS,
        summary="The lead's newest score, rule by rule",
        responses={
            404: {"model": Problem, "description": "Unknown lead, or no score update recorded yet"}
        },
        tags=["leads"],
    )
    async def lead_score(lead_id: LeadId, session: SessionDep) -> ScoreBreakdown:
        lead_id = lead_ids.normalize(lead_id, settings.lead_id_normalization)
        known = await aliases.resolve(session, lead_id)
        found = await store.breakdown(session, known or lead_id)
        if found is not None:
            return found.model_copy(update={"requested_alias": known and lead_id})
        if await store.lead_exists(session, known or lead_id):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"lead {lead_id!r} has no score breakdown yet: no score update was recorded",
            )
        raise _unknown_lead(lead_id)

    @app.get(
        "/v1/leads/{lead_id:path}",
        dependencies=READS,
        summary="The lead's stage and score",
        responses=_UNKNOWN_LEAD,
        tags=["leads"],
    )
    async def get_lead(lead_id: LeadId, session: SessionDep, as_of: AsOf = None) -> LeadAnswer:
        lead_id = lead_ids.normalize(lead_id, settings.lead_id_normalization)
        known = await aliases.resolve(session, lead_id)
        found = await lead_reads.get_lead(session, known or lead_id, _moment(as_of))
        if found is None:
            raise _unknown_lead(lead_id)
        return LeadAnswer(**dict(found), requested_alias=known and lead_id)

    @app.get(
        "/v1/stage-changes",
        dependencies=READS,
        summary="Every stage change once, in the order recorded, for CRMs that poll",
        tags=["stage changes"],
    )
    async def stage_changes(
        session: SessionDep,
        after: Annotated[
            int,
            Query(
                ge=0,
                le=MAX_POSITION,
                description="next_after of the previous poll; 0 from the start.",
            ),
        ] = 0,
        limit: Limit = settings.page_size_default,
    ) -> StageChangeFeed:
        return await store.feed(session, after=after, limit=limit)

    install_analytics(app, get_session, dependencies=READS)
    install_accounts(app, settings, get_session, dependencies=READS)
    install_erasures(app, settings, get_database, get_session, dependencies=ADMIN)
    install_stream(app, settings)
    install_auth(app, settings)  # after every route: it documents their security
    install_dashboard(app, settings)  # after auth: signing in makes its sessions
    return app
