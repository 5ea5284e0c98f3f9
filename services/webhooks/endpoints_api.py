"""``/v1/endpoints``: who is subscribed to what, and with which secret (scope admin)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import select

from services.webhooks import payloads, store
from services.webhooks.api_models import (
    Endpoint,
    EndpointIn,
    EndpointList,
    EndpointPatch,
    EndpointWithSecret,
    PingSent,
)
from services.webhooks.filters import Filters
from services.webhooks.service import ServiceDep, SessionDep
from services.webhooks.signing import new_secret
from services.webhooks.tables import EndpointRow
from shared.api_models import Problem
from shared.auth import Admin
from shared.database_outage import DATABASE_DOWN

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"], responses=DATABASE_DOWN)

EndpointId = Annotated[str, Path(max_length=40, description="The endpoint's id (ep_...).")]

UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown endpoint"}
}


def endpoint(row: EndpointRow) -> Endpoint:
    return Endpoint(
        endpoint_id=row.endpoint_id,
        url=row.url,
        description=row.description,
        event_types=row.event_types,
        filters=Filters.model_validate(row.filters),
        rate_limit=row.rate_limit,
        concurrency=row.concurrency,
        enabled=row.disabled_at is None,
        disabled_reason=row.disabled_reason,
        previous_secret_until=row.previous_secret_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def unknown_endpoint(endpoint_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"endpoint {endpoint_id!r} is unknown")


async def found(session: SessionDep, endpoint_id: str) -> EndpointRow:
    row = await session.get(EndpointRow, endpoint_id)
    if row is None:
        raise unknown_endpoint(endpoint_id)
    return row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe an endpoint; its signing secret is in this answer only",
)
async def create_endpoint(
    body: EndpointIn, _: Admin, service: ServiceDep, session: SessionDep
) -> EndpointWithSecret:
    url = str(body.url)
    await service.check_url(url)
    now = service.clock()
    secret = new_secret()
    row = EndpointRow(
        endpoint_id=f"ep_{uuid.uuid4().hex}",
        url=url,
        description=body.description,
        event_types=list(dict.fromkeys(body.event_types)),
        filters=body.filters.model_dump(mode="json"),
        rate_limit=body.rate_limit or service.settings.webhooks_default_rate_limit,
        concurrency=body.concurrency or service.settings.webhooks_default_concurrency,
        secret=service.box.seal(secret),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.commit()
    return EndpointWithSecret(**endpoint(row).model_dump(), secret=secret)


@router.get("", summary="Every endpoint, oldest first")
async def list_endpoints(_: Admin, session: SessionDep) -> EndpointList:
    rows = await session.scalars(select(EndpointRow).order_by(EndpointRow.created_at))
    return EndpointList(items=[endpoint(r) for r in rows])


@router.get("/{endpoint_id}", summary="One endpoint", responses=UNKNOWN)
async def get_endpoint(endpoint_id: EndpointId, _: Admin, session: SessionDep) -> Endpoint:
    return endpoint(await found(session, endpoint_id))


@router.patch("/{endpoint_id}", summary="Change the fields given", responses=UNKNOWN)
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointPatch, _: Admin, service: ServiceDep, session: SessionDep
) -> Endpoint:
    row = await found(session, endpoint_id)
    given = body.model_fields_set
    if body.url is not None:
        await service.check_url(str(body.url))
        row.url = str(body.url)
    if body.description is not None:
        row.description = body.description
    if body.event_types is not None:
        row.event_types = list(dict.fromkeys(body.event_types))
    if body.filters is not None:
        row.filters = body.filters.model_dump(mode="json")
    if "rate_limit" in given:
        row.rate_limit = body.rate_limit
    if body.concurrency is not None:
        row.concurrency = body.concurrency
    row.updated_at = service.clock()
    await session.commit()
    return endpoint(row)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unsubscribe: the endpoint, its messages and attempts are deleted",
    responses=UNKNOWN,
)
async def delete_endpoint(endpoint_id: EndpointId, _: Admin, session: SessionDep) -> None:
    if not await store.delete_endpoint(session, endpoint_id):
        raise unknown_endpoint(endpoint_id)


@router.post(
    "/{endpoint_id}/disable",
    summary="Stop delivering; messages wait, and new events are not stored for it",
    responses=UNKNOWN,
)
async def disable_endpoint(
    endpoint_id: EndpointId, _: Admin, service: ServiceDep, session: SessionDep
) -> Endpoint:
    row = await found(session, endpoint_id)
    if row.disabled_at is None:
        row.disabled_at = row.updated_at = service.clock()
        row.disabled_reason = "disabled by an admin"
        await session.commit()
    return endpoint(row)


@router.post(
    "/{endpoint_id}/enable",
    summary="Deliver again, starting with the messages that waited",
    responses=UNKNOWN,
)
async def enable_endpoint(
    endpoint_id: EndpointId, _: Admin, service: ServiceDep, session: SessionDep
) -> Endpoint:
    row = await found(session, endpoint_id)
    if row.disabled_at is not None:
        row.disabled_at = row.disabled_reason = None
        row.updated_at = service.clock()
        await session.commit()
        service.wake_deliverer()
    return endpoint(row)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="A new signing secret; the old one still signs during the overlap",
    description="Every webhook is signed with both secrets (two signatures, space separated)"
    " until `previous_secret_until`, so the receiver can switch at its own pace.",
    responses=UNKNOWN,
)
async def rotate_secret(
    endpoint_id: EndpointId, _: Admin, service: ServiceDep, session: SessionDep
) -> EndpointWithSecret:
    row = await found(session, endpoint_id)
    now = service.clock()
    secret = new_secret()
    row.previous_secret = row.secret
    overlap = timedelta(hours=service.settings.webhooks_rotation_overlap_hours)
    row.previous_secret_until = now + overlap
    row.secret = service.box.seal(secret)
    row.updated_at = now
    await session.commit()
    return EndpointWithSecret(**endpoint(row).model_dump(), secret=secret)


@router.post(
    "/{endpoint_id}/test",
    summary="Send a signed webhook.test now and say how the endpoint answered",
    responses=UNKNOWN,
)
async def ping_endpoint(
    endpoint_id: EndpointId, _: Admin, service: ServiceDep, session: SessionDep
) -> PingSent:
    row = await found(session, endpoint_id)
    webhook_id, body = payloads.ping(service.clock(), uuid.uuid4().hex)
    result, _response = await service.delivery.attempt(row, webhook_id, body)
    return PingSent(
        webhook_id=webhook_id,
        outcome=result.outcome,
        response_code=result.response_code,
        latency_ms=result.latency_ms,
        error=result.error,
    )
