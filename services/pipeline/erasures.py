"""Erasing a lead (GDPR art. 17, CCPA): ``DELETE /v1/leads/{lead_id}`` and its status.

The request is recorded (by a hash of the lead id, never the id), then an erase record
(type ``lead.erased``, key = lead id) is written to ``leadflow.events`` with the one
idempotent ``acks=all`` producer; ``202`` only once Kafka acknowledged it. Scoring,
reading the lead's partition in order, applies every event posted before it, then drops
the state and writes the tombstones; the pipeline deletes the rows when the tombstones
arrive and marks the request complete (see :mod:`services.pipeline.store`).

An unknown lead id is erased all the same (``202``, never ``404``): its events may be on
their way through ``leadflow.events``, and the answer must not depend on how far they
got, nor tell a caller which ids leadflow knows.

Erasing a lead erases its aliases too (the anonymous ids merged into it): each by an
erase request of its own, published before the lead's, so later events of those ids
start new visitors rather than the erased lead again; the answer names the lead's
request. An alias is erased as the id it is, not as the lead it names: the alias goes,
and later events of that id start a new visitor; the known lead keeps what was merged
into it.
"""

# No ``from __future__ import annotations``: FastAPI resolves the routes' annotations.
import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Match, Route

from services.pipeline import aliases, store
from services.pipeline.settings import PipelineSettings
from shared import lead_ids
from shared.api_models import Problem, Timestamp
from shared.database import Database
from shared.events import LEAD_ERASED, NO_CONTROL_CHARS_PATTERN, Event, no_control_chars
from shared.kafka import encode_key, make_producer

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0
"""How long the erase record may wait for Kafka before the request is answered 503."""

RETRY_AFTER_SECONDS = 5


class Erasure(BaseModel):
    """An erase request: the lead's rows and compacted records go once it is complete."""

    erase_id: str = Field(description="Names the request: GET /v1/erasures/{erase_id}.")
    status: Literal["pending", "complete"] = Field(
        description="complete: scoring dropped the state and wrote the tombstones, and the "
        "pipeline deleted the rows."
    )
    requested_at: Timestamp
    completed_at: Timestamp | None = Field(description="Null while pending.")


def _erasure(row: Any) -> Erasure:
    return Erasure(
        erase_id=row.erase_id,
        status="pending" if row.completed_at is None else "complete",
        requested_at=row.requested_at,
        completed_at=row.completed_at,
    )


class ErasePublisher:
    """The pipeline's one producer, for erase records; started on the first erasure."""

    def __init__(self, settings: PipelineSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, event: Event) -> None:
        """Return once Kafka has the record (acks=all); raise KafkaError or TimeoutError."""
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            producer = await self._connected()
            await producer.send_and_wait(
                self._settings.topics.events, event.to_json(), key=encode_key(event.lead_id)
            )

    async def _connected(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._settings, name="pipeline-erasures")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


ErasableLeadId = Annotated[
    str,
    Path(
        description=(
            "The lead's id, as events name it. `@` and `/` may stay as they are; "
            "percent-encode `?`, `#`, `%` and spaces."
        ),
        json_schema_extra={"pattern": NO_CONTROL_CHARS_PATTERN},
    ),
]


EraseId = Annotated[
    str,
    AfterValidator(no_control_chars),
    Path(
        max_length=64,
        description="The erase_id the DELETE answered with.",
        json_schema_extra={"pattern": NO_CONTROL_CHARS_PATTERN},
    ),
]
"""Control characters are refused (PostgreSQL text cannot hold NUL)."""


def erase_record(lead_id: str, erase_id: str, now: datetime) -> Event:
    """The ``lead.erased`` event for ``lead_id``, validated as any event's lead id is."""
    try:
        return Event(
            event_id=erase_id,
            type=LEAD_ERASED,
            lead_id=lead_id,
            occurred_at=now,
            source="leadflow-pipeline",
        )
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if e["loc"] == ("lead_id",)]
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": ("path", "lead_id"), "msg": e["msg"], "input": lead_id}
                for e in errors or exc.errors(include_url=False)
            ]
        ) from None


def install_erasures(
    app: FastAPI,
    settings: PipelineSettings,
    database: Callable[..., Any],
    session: Callable[..., Any],
    dependencies: Sequence[Any] = (),
) -> None:
    """Add the erasure routes to ``app``, guarded by ``dependencies``, and close their
    producer when the app stops.

    ``database`` and ``session`` are the app's dependencies giving the
    :class:`~shared.database.Database` and one request's session.
    """
    publisher = ErasePublisher(settings)
    serving = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        try:
            async with serving(app) as state:
                yield state
        finally:
            await publisher.close()

    app.router.lifespan_context = lifespan
    _add_routes(app, publisher, database, session, list(dependencies), settings)
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, _method_not_allowed)


async def _method_not_allowed(request: Request, _: Exception) -> Response:
    """A 405 whose ``Allow`` names every method of the path the request matched: Starlette
    names those of the first matching route only, and ``/v1/leads/{lead_id}`` has two
    (GET and DELETE). The routes of one documented path count, as the OpenAPI document
    says (a DELETE of ``/v1/leads/x/history`` erases the lead ``x/history``, yet GET is
    what ``/v1/leads/{lead_id}/history`` documents)."""
    routes = [route for route in request.app.router.routes if isinstance(route, Route)]
    matched = next((r for r in routes if r.matches(request.scope)[0] is not Match.NONE), None)
    allowed: set[str] = set()
    for route in routes:
        if matched is not None and route.path == matched.path:
            allowed |= route.methods or set()
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": ", ".join(sorted(allowed))},
    )


def _add_routes(
    app: FastAPI,
    publisher: ErasePublisher,
    database: Callable[..., Any],
    session: Callable[..., Any],
    dependencies: list[Any],
    settings: PipelineSettings,
) -> None:
    """On the app itself, not through an included router: FastAPI keeps an included router
    as one entry, which :func:`_method_not_allowed` could not look into."""
    DatabaseDep = Annotated[Database, Depends(database)]
    SessionDep = Annotated[AsyncSession, Depends(session)]

    @app.delete(
        "/v1/leads/{lead_id:path}",
        tags=["erasure"],
        dependencies=dependencies,
        summary="Erase a lead everywhere leadflow keeps it (GDPR art. 17, CCPA)",
        description=(__doc__ or "").split("\n\n", 1)[1].strip(),
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            202: {
                "description": "Kafka has the erase record; follow Location for its status",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            503: {
                "model": Problem,
                "description": "Kafka or the database did not confirm; retry the DELETE",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
        },
    )
    async def erase_lead(lead_id: ErasableLeadId, response: Response, db: DatabaseDep) -> Erasure:
        now = datetime.now(UTC)
        # the lead as ingest keyed it: another spelling would go to another partition
        lead_id = lead_ids.normalize(lead_id, settings.lead_id_normalization)
        event = erase_record(lead_id, str(uuid.uuid4()), now)
        async with db.sessions() as session:
            merged = await aliases.merged_into(session, lead_id)
        # the aliases first: a DELETE retried after a 503 still finds them
        for alias in merged:
            await _erase(db, erase_record(alias, str(uuid.uuid4()), now))
        await _erase(db, event)
        response.headers["Location"] = f"/v1/erasures/{event.event_id}"
        return Erasure(
            erase_id=event.event_id, status="pending", requested_at=now, completed_at=None
        )

    async def _erase(db: Database, event: Event) -> None:
        """Record the request, then publish its erase record; a 503 when Kafka does not
        confirm it (the request withdrawn)."""
        await store.request_erasure(db.sessions, event.event_id, event.lead_id, event.occurred_at)
        try:
            await publisher.publish(event)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("an erase record was not confirmed by Kafka: %r", exc)
            await store.withdraw_erasure(db.sessions, event.event_id)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Kafka did not confirm the erase record; retry the DELETE",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None

    @app.get(
        "/v1/erasures/{erase_id}",
        tags=["erasure"],
        dependencies=dependencies,
        summary="Whether an erasure is complete",
        responses={404: {"model": Problem, "description": "No erase request has this id"}},
    )
    async def get_erasure(erase_id: EraseId, session: SessionDep) -> Erasure:
        row = await store.erasure(session, erase_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"erasure {erase_id!r} is unknown")
        return _erasure(row)
