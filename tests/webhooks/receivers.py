"""Webhook receivers for tests: real HTTP servers on loopback that verify like a CRM would.

Every request is checked with the ``standardwebhooks`` reference library against
each secret the test gave; what verified is recorded with the delivery, never
checked with leadflow's own code. What the receiver answers is the test's to set.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.servers import serving


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    payload: dict[str, Any]
    verified_by: frozenset[str]
    """The secrets whose signature the reference library accepted."""
    signatures: int


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds each request takes to answer."""
    hold: threading.Event | None = None
    """While set to an unset event, requests are held open (a slow receiver)."""
    deliveries: list[Delivery] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """Status codes answered other than 2xx, in order."""
    url: str = ""

    def ids(self) -> list[str]:
        return [d.webhook_id for d in self.deliveries]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.hold is not None:
                while not self.hold.is_set():  # noqa: ASYNC110 (set from the test's thread)
                    await asyncio.sleep(0.02)
            headers = dict(request.headers)
            verified = frozenset(s for s in self.secrets if _verifies(s, body, headers))
            if not 200 <= self.status < 300:
                self.refused.append(self.status)
                return Response(status_code=self.status, headers=self.headers)
            self.deliveries.append(
                Delivery(
                    headers["webhook-id"],
                    orjson.loads(body),
                    verified,
                    len(headers["webhook-signature"].split(" ")),
                )
            )
            return Response(status_code=self.status)

        return app


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    with serving(receiver.app()) as base:
        receiver.url = f"{base}/hook"
        yield receiver


class ManualClock:
    """The service's notion of now, moved by the test: hours pass in an instant."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by
