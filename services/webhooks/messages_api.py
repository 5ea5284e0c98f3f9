"""``/v1/endpoints/{id}/messages``: what was sent, how each attempt went, and replay."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, status

from services.webhooks import store
from services.webhooks.api_models import (
    Attempt,
    Message,
    MessageDetail,
    MessagePage,
    Replayed,
    ReplaySince,
)
from services.webhooks.endpoints_api import UNKNOWN, EndpointId, found
from services.webhooks.service import ServiceDep, SessionDep
from services.webhooks.tables import AttemptRow, MessageRow
from shared.auth import Admin
from shared.database_outage import DATABASE_DOWN

router = APIRouter(prefix="/v1/endpoints/{endpoint_id}", tags=["messages"], responses=DATABASE_DOWN)

MessageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The message's id.")]


def message(row: MessageRow) -> Message:
    return Message.model_validate(row, from_attributes=True)


def attempt(row: AttemptRow) -> Attempt:
    return Attempt.model_validate(row, from_attributes=True)


@router.get("/messages", summary="The endpoint's messages, oldest first", responses=UNKNOWN)
async def list_messages(
    endpoint_id: EndpointId,
    _: Admin,
    session: SessionDep,
    status_: Annotated[
        store.Status | None, Query(alias="status", description="Only messages in this state.")
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="next_after of the last page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MessagePage:
    await found(session, endpoint_id)
    rows = await store.messages(session, endpoint_id, status=status_, after=after, limit=limit)
    return MessagePage(
        items=[message(r) for r in rows], next_after=rows[-1].message_id if rows else after
    )


@router.get(
    "/messages/{message_id}",
    summary="One message: its payload and every attempt (status, response code, latency, error)",
    responses={404: UNKNOWN[404] | {"description": "Unknown endpoint or message"}},
)
async def get_message(
    endpoint_id: EndpointId, message_id: MessageId, _: Admin, session: SessionDep
) -> MessageDetail:
    row = await _message(session, endpoint_id, message_id)
    attempts = [attempt(a) for a in await store.attempts(session, message_id)]
    return MessageDetail(
        **message(row).model_dump(), payload=orjson.loads(row.body), attempt_log=attempts
    )


@router.post(
    "/messages/{message_id}/replay",
    summary="Send the message again now, under the same webhook-id",
    responses={404: UNKNOWN[404] | {"description": "Unknown endpoint or message"}},
)
async def replay_message(
    endpoint_id: EndpointId,
    message_id: MessageId,
    _: Admin,
    service: ServiceDep,
    session: SessionDep,
) -> Replayed:
    await _message(session, endpoint_id, message_id)
    count = await store.replay(session, endpoint_id, service.clock(), message_id=message_id)
    service.wake_deliverer()
    return Replayed(replayed=count)


@router.post(
    "/replay",
    summary="Send again every message of the endpoint created since a time",
    responses=UNKNOWN,
)
async def replay_since(
    endpoint_id: EndpointId, body: ReplaySince, _: Admin, service: ServiceDep, session: SessionDep
) -> Replayed:
    await found(session, endpoint_id)
    count = await store.replay(session, endpoint_id, service.clock(), since=body.since)
    service.wake_deliverer()
    return Replayed(replayed=count)


@router.post(
    "/recover",
    summary="Try every failed message of the endpoint again, on a fresh schedule",
    responses=UNKNOWN,
)
async def recover_failed(
    endpoint_id: EndpointId, _: Admin, service: ServiceDep, session: SessionDep
) -> Replayed:
    await found(session, endpoint_id)
    count = await store.replay(session, endpoint_id, service.clock(), status=store.FAILED)
    service.wake_deliverer()
    return Replayed(replayed=count)


async def _message(session: SessionDep, endpoint_id: str, message_id: int) -> MessageRow:
    await found(session, endpoint_id)
    row = await store.message(session, endpoint_id, message_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"message {message_id} is unknown")
    return row
