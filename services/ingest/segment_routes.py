"""The Segment HTTP Tracking API on ingest: ``/v1/track`` ... ``/v1/batch``.

Answers are the ones Segment's and RudderStack's SDKs act on rightly (their request
code, docs/architecture.md "Segment ingest"): 200 ``{"success": true}`` only once Kafka
has every event; every refusal a JSON ``{"code", "message", "detail"}`` (both SDKs read
``code`` and ``message``; RudderStack retries an error body without them as if the
network had failed). Neither SDK retries 400, 401, 403 or 413, so bad input, a bad key
and a body over Segment's limits are dropped by the SDK with a logged error; both retry
429 and 503, which carry ``Retry-After`` (Segment's SDK waits that long).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.routing import APIRoute

from services.ingest import metrics
from services.ingest.decoding import media_type
from services.ingest.inflate import GZIP, IDENTITY, InflatedTooLarge, Inflater, NotGzip
from services.ingest.publisher import KafkaUnavailable
from services.ingest.segment import (
    CALL_TYPES,
    MAX_BATCH_BYTES,
    MAX_CALL_BYTES,
    CallRefused,
    TooLarge,
    decode_batch,
    decode_call,
    now,
    too_large,
    with_merge_requests,
)
from services.ingest.segment_events import EventMap
from services.ingest.settings import IngestSettings
from shared.events import EventIn

if TYPE_CHECKING:
    from services.ingest.app import Gate

Publish = Callable[[list[EventIn], str], Awaitable[object]]

SUCCESS = orjson.dumps({"success": True})

ACCEPTED_MEDIA_TYPES = ("", "application/json", "text/plain")
"""JSON, or text/plain (what some senders use for a JSON body), or none. The write key
must come in a header all the same: a ``writeKey`` in the body is ignored, since the
caller is known before the body is read."""

_CODES = {
    401: "unauthorized",
    403: "forbidden",
    429: "rate_limited",
    503: "unavailable",
}


def refusal(
    status_code: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"success": False, "code": code, "message": message, "detail": detail or message}
    return Response(
        orjson.dumps(body), status_code, dict(headers or {}), media_type="application/json"
    )


async def read_segment_body(request: Request, limit: int) -> bytes:
    """The body, inflated when gzip, refused past ``limit`` bytes as it streams (both
    the bytes received and the bytes they inflate to)."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in GZIP + IDENTITY:
        raise CallRefused(
            "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit, "the body")
    inflater = Inflater(limit) if encoding in GZIP else None
    received = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit, "the body")
        if inflater is not None:
            inflater.feed(chunk)
        else:
            chunks.append(chunk)
    return inflater.finish() if inflater is not None else b"".join(chunks)


class SegmentEndpoints:
    """One handler per call type and the batch; ``publish`` is ingest's own."""

    def __init__(
        self, settings: IngestSettings, gate: Gate, publish: Publish, events: EventMap
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.publish = publish
        self.events = events

    def call(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._answer(request, kind)

        endpoint.__name__ = f"segment_{kind}"
        return endpoint

    async def _answer(self, request: Request, kind: str) -> Response:
        received_at = now()
        try:
            principal = await self.gate.admit(request)
            events = await self._decode(request, kind, received_at)
            self.gate.check_events(principal, events)
            await self.publish(events, f"segment_{kind}")
        except HTTPException as exc:  # the gate's refusals; counted there
            code = _CODES.get(exc.status_code, "refused")
            return refusal(exc.status_code, code, str(exc.detail), headers=exc.headers)
        except TooLarge as exc:
            metrics.REJECTED.labels("too_large").inc()
            return refusal(status.HTTP_413_CONTENT_TOO_LARGE, exc.code, exc.message, exc.errors)
        except CallRefused as exc:
            reason = "media_type" if exc.code.startswith("unsupported") else "invalid"
            metrics.REJECTED.labels(reason).inc()
            answer = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE if reason == "media_type" else 400
            return refusal(answer, exc.code, exc.message, exc.errors or None)
        except KafkaUnavailable as exc:
            metrics.REJECTED.labels("kafka_unavailable").inc()
            return refusal(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "unavailable",
                f"Kafka did not confirm the write ({exc}); retry the same calls",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        return Response(SUCCESS, status.HTTP_200_OK, media_type="application/json")

    async def _decode(self, request: Request, kind: str, received_at: Any) -> list[EventIn]:
        kind_of_body = media_type(request.headers.get("content-type"))
        if kind_of_body not in ACCEPTED_MEDIA_TYPES:
            allowed = ", ".join(t for t in ACCEPTED_MEDIA_TYPES if t)
            raise CallRefused(
                "unsupported_media_type",
                f"content type {kind_of_body!r} is not supported; use {allowed}",
            )
        limit = MAX_BATCH_BYTES if kind == "batch" else MAX_CALL_BYTES
        try:
            body = await read_segment_body(request, limit)
        except InflatedTooLarge:
            raise too_large(limit, "the inflated body") from None
        except NotGzip as exc:
            raise CallRefused("invalid_gzip", str(exc)) from None
        if kind == "batch":
            calls = decode_batch(body, received_at, self.events, self.settings.max_batch_events)
        else:
            calls = [decode_call(body, kind, received_at, self.events)]
        return with_merge_requests(calls)


_DESCRIPTION = (
    "Segment HTTP Tracking API. The write key is a leadflow API key sent as the HTTP "
    "Basic user name with an empty password (or as any other leadflow credential); "
    'the body may be gzip (`Content-Encoding: gzip`). 200 `{"success": true}` once '
    "Kafka has the events."
)


def _responses() -> dict[int | str, dict[str, Any]]:
    problem = {
        "type": "object",
        "properties": {
            "success": {"const": False},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "detail": {},
        },
        "required": ["success", "code", "message"],
    }
    content = {"application/json": {"schema": problem}}
    retry = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return {
        200: {
            "description": "Kafka has every event",
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"success": {"const": True}}}
                }
            },
        },
        400: {
            "description": "Invalid JSON, gzip or call; detail names each field",
            "content": content,
        },
        401: {"description": "No or unknown write key", "content": content},
        403: {"description": "The key lacks the scope a call needs", "content": content},
        413: {
            "description": f"A call over {MAX_CALL_BYTES // 1024} KB"
            f" or a batch over {MAX_BATCH_BYTES // 1024} KB",
            "content": content,
        },
        415: {"description": "Unsupported content type or encoding", "content": content},
        429: {"description": "Over the key's rate limit", "content": content, "headers": retry},
        503: {
            "description": "Kafka did not confirm the write; retry",
            "content": content,
            "headers": retry,
        },
    }


def install_segment_routes(
    app: FastAPI,
    settings: IngestSettings,
    gate: Gate,
    publish: Publish,
    events: EventMap,
    route_class: type[APIRoute] = APIRoute,
) -> None:
    endpoints = SegmentEndpoints(settings, gate, publish, events)
    for kind in (*CALL_TYPES, "batch"):
        app.router.add_api_route(
            f"/v1/{kind}",
            endpoints.call(kind),
            methods=["POST"],
            route_class_override=route_class,
            tags=["Segment"],
            responses=_responses(),
            summary=f"Segment {kind}"
            if kind != "batch"
            else "Segment batch of calls (all or none)",
            description=_DESCRIPTION,
        )
