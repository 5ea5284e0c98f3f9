"""ingest's HTTP surface (docs/architecture.md §6): decode, validate, publish, acknowledge."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.routing import request_response

from services.ingest import metrics
from services.ingest.decoding import (
    InvalidEvents,
    UnsupportedMediaType,
    decode_batch,
    decode_single,
)
from services.ingest.publisher import EventPublisher, KafkaUnavailable
from services.ingest.segment_events import load_event_map
from services.ingest.segment_routes import install_segment_routes
from services.ingest.settings import IngestSettings
from shared import cloudevents, lead_ids
from shared.api_models import Problem
from shared.auth import (
    Authenticator,
    Principal,
    RequireScope,
    forbidden,
    install_auth,
    load_authenticator,
    operation_name,
    require_event_scopes,
)
from shared.events import CRM_EVENT_TYPES, Event, EventIn
from shared.http_edge import install_http_edge
from shared.probes import install_probes
from shared.rate_limit import RateLimiter

POSTING = RequireScope(
    "events:write", f" (`crm:write` instead for {', '.join(sorted(CRM_EVENT_TYPES))})"
)
"""Declared on the event routes for the document; :class:`Gate` enforces it."""


class Accepted(BaseModel):
    """Kafka has every one of these events (written with acks=all)."""

    accepted: int = Field(ge=1, description="How many events were accepted.")
    event_ids: list[str] = Field(description="Their event_ids, in order; missing ones assigned.")


class FieldError(BaseModel):
    """One invalid field, in FastAPI's shape."""

    loc: list[str | int] = Field(
        min_length=1,
        description='Where: "body", then the item\'s index in a batch, then the field.',
    )
    msg: str = Field(min_length=1, description="What is wrong with it.")
    type: str = Field(min_length=1, description="The kind of error (missing, json_invalid...).")


class InvalidRequest(BaseModel):
    """The events are refused, all of them; one entry per bad field."""

    detail: list[FieldError] = Field(min_length=1)


class BodyTooLarge(Exception):
    pass


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class HandledRoute(APIRoute):
    """An operation whose endpoint takes the request and returns the response itself.

    FastAPI documents it from its declaration as any other (request body, responses,
    security), but neither solves its dependencies nor validates and encodes what it
    returns, and Starlette, not FastAPI, wraps it (FastAPI's wrapper opens two exit
    stacks per request for dependencies with ``yield``): for one small event that
    machinery cost more than decoding it. So the endpoint enforces what the declaration
    promises (the scopes, through :class:`Gate`) and builds the documented body itself.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Handler:
        return cast(Handler, self.endpoint)


class Gate:
    """Who may post, checked inside the handlers (FastAPI solves no dependencies there).

    Before the body is read: the credential (401), the caller's rate (429), a scope to
    post anything at all (403). Once the events are decoded: each event's own scope,
    all of them before any is published.
    """

    def __init__(self, authenticator: Authenticator, limiter: RateLimiter | None) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def admit(self, request: Request) -> Principal | None:
        try:
            principal = await self.authenticator.authenticate(request.headers)
            if principal is None:
                return None
            request.state.principal = principal
            self._limit(principal)
            if not {"events:write", "crm:write"} & principal.scopes:
                raise forbidden(principal, "events:write", operation_name(request))
        except HTTPException as exc:
            metrics.REJECTED.labels(_REFUSED.get(exc.status_code, "unauthenticated")).inc()
            raise
        return principal

    def _limit(self, principal: Principal) -> None:
        if self.limiter is None:
            return
        wait = self.limiter.retry_after(f"{principal.kind}:{principal.name}")
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{principal.kind} {principal.name!r} is over its rate limit of "
                f"{self.limiter.rate:g} requests per second; retry after {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def check_events(self, principal: Principal | None, events: Sequence[EventIn]) -> None:
        try:
            require_event_scopes(principal, (event.type for event in events))
        except HTTPException:
            metrics.REJECTED.labels("forbidden").inc()
            raise


_REFUSED = {401: "unauthenticated", 403: "forbidden", 429: "rate_limited", 503: "auth_unavailable"}


def rate_limiter(settings: IngestSettings) -> RateLimiter | None:
    rate = settings.rate_limit_per_second
    if rate == 0:
        return None
    return RateLimiter(rate, settings.rate_limit_burst or max(1, math.ceil(rate)))


def accepted(events: Sequence[EventIn]) -> Response:
    """The 202 with its :class:`Accepted` body, byte for byte what FastAPI would send."""
    body = orjson.dumps({"accepted": len(events), "event_ids": [e.event_id for e in events]})
    return Response(body, status.HTTP_202_ACCEPTED, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted as it streams: Content-Length alone can lie or be absent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


_EVENT = {"anyOf": [_json_schema(EventIn), _json_schema(cloudevents.CloudEventIn)]}
_CLOUDEVENT = _json_schema(cloudevents.CloudEventIn)


def _request_body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    media = {kind: {"schema": schema} for kind, schema in content.items()}
    return {"requestBody": {"required": True, "content": media}}


def _batch_of(item: dict[str, Any], max_events: int) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 1, "maxItems": max_events}


def _responses(settings: IngestSettings, limited: bool) -> dict[int | str, dict[str, Any]]:
    """Every answer but the 202, with its body: FastAPI's ``{"detail": ...}`` shape.

    401 and 403 are added by :func:`shared.auth.install_auth` when authentication is on.
    """
    responses: dict[int | str, dict[str, Any]] = {
        413: {
            "model": Problem,
            "description": f"The body is larger than {settings.max_body_bytes} bytes",
        },
        415: {"model": Problem, "description": "Unsupported content type"},
        422: {
            "model": InvalidRequest,
            "description": "Invalid JSON or events; each error names the item and field",
        },
        503: {
            "model": Problem,
            "description": "Kafka did not confirm the write; retry with the same event_ids",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        },
    }
    if limited:
        responses[429] = {
            "model": Problem,
            "description": "The key is over its rate limit; retry after Retry-After seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        }
    return responses


_BINARY_MODE = (
    "A CloudEvent in binary mode is also accepted as `application/json`: its attributes in "
    "`ce-*` headers (`ce-specversion: 1.0`, `ce-id`, `ce-type`, `ce-source`, `ce-subject`, "
    "`ce-time`), the body its `data` (a JSON object)."
)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    publisher = EventPublisher(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await publisher.close()

    app = FastAPI(
        title="leadflow ingest",
        version="1",
        summary="Marketing platforms post engagement events and lead attributes here.",
        lifespan=lifespan,
    )
    _install_error_handlers(app, settings)

    async def readiness() -> Mapping[str, bool]:
        return {"kafka": await publisher.is_ready()}

    install_probes(app, readiness)
    install_http_edge(app, settings)

    authenticator = load_authenticator(settings)
    limiter = rate_limiter(settings) if authenticator.enabled else None
    gate = Gate(authenticator, limiter)

    async def publish(events: list[EventIn], endpoint: str) -> list[EventIn]:
        """Every accepted event passes here: its lead id normalised, then written."""
        events = lead_ids.normalized(events, settings.lead_id_normalization)
        started = time.perf_counter()
        try:
            await publisher.publish(events)
        finally:
            metrics.publish_seconds(endpoint).observe(time.perf_counter() - started)
        metrics.events_accepted(endpoint).inc(len(events))
        return events

    async def accept(events: list[EventIn], endpoint: str) -> Response:
        return accepted(await publish(events, endpoint))

    async def post_event(request: Request) -> Response:
        principal = await gate.admit(request)
        body = await read_body(request, settings.max_body_bytes)
        event = decode_single(request.headers.get("content-type"), request.headers, body)
        gate.check_events(principal, [event])
        return await accept([event], "single")

    async def post_batch(request: Request) -> Response:
        principal = await gate.admit(request)
        body = await read_body(request, settings.max_body_bytes)
        events = decode_batch(request.headers.get("content-type"), body, settings.max_batch_events)
        gate.check_events(principal, events)
        return await accept(events, "batch")

    responses = _responses(settings, limited=limiter is not None)

    app.router.add_api_route(
        "/v1/events",
        post_event,
        methods=["POST"],
        route_class_override=HandledRoute,
        response_model=Accepted,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(POSTING)],
        responses=responses,
        summary="Post one event (native JSON or a CloudEvent, structured or binary mode)",
        description=_BINARY_MODE,
        openapi_extra=_request_body(
            {"application/json": _EVENT, cloudevents.STRUCTURED_CONTENT_TYPE: _CLOUDEVENT}
        ),
    )

    batch = _batch_of(_EVENT, settings.max_batch_events)

    app.router.add_api_route(
        "/v1/events/batch",
        post_batch,
        methods=["POST"],
        route_class_override=HandledRoute,
        response_model=Accepted,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(POSTING)],
        responses=responses,
        summary=f"Post up to {settings.max_batch_events} events at once: all are accepted, or none",
        description='A JSON array of events, or `{"events": [...]}`.',
        openapi_extra=_request_body(
            {
                "application/json": {
                    "anyOf": [
                        batch,
                        {
                            "type": "object",
                            "properties": {"events": batch},
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                    ]
                },
                cloudevents.BATCH_CONTENT_TYPE: _batch_of(_CLOUDEVENT, settings.max_batch_events),
            }
        ),
    )

    events_map = load_event_map(settings.segment_events_file)
    install_segment_routes(app, settings, gate, publish, events_map, HandledRoute)
    _register_schemas(app)
    install_auth(app, settings, authenticator)
    return app


def _install_error_handlers(app: FastAPI, settings: IngestSettings) -> None:
    @app.exception_handler(InvalidEvents)
    async def invalid(_: Request, exc: InvalidEvents) -> JSONResponse:
        metrics.REJECTED.labels("invalid").inc()
        return JSONResponse({"detail": exc.errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(UnsupportedMediaType)
    async def unsupported(_: Request, exc: UnsupportedMediaType) -> JSONResponse:
        metrics.REJECTED.labels("media_type").inc()
        return JSONResponse({"detail": str(exc)}, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, __: BodyTooLarge) -> JSONResponse:
        metrics.REJECTED.labels("too_large").inc()
        detail = f"the body is larger than {settings.max_body_bytes} bytes"
        return JSONResponse({"detail": detail}, status.HTTP_413_CONTENT_TOO_LARGE)

    @app.exception_handler(KafkaUnavailable)
    async def unavailable(_: Request, exc: KafkaUnavailable) -> JSONResponse:
        metrics.REJECTED.labels("kafka_unavailable").inc()
        return JSONResponse(
            {"detail": f"Kafka did not confirm the write ({exc}); retry with the same event_id"},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )


def _register_schemas(app: FastAPI) -> None:
    """Request bodies are parsed by hand (several content types), so publish their schemas."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (EventIn, cloudevents.CloudEventIn, Event):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
