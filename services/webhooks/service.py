"""What the routes share: the database, the secret box, the URL policy, the clock.

Built by the app's lifespan and kept in ``app.state.service``; routes take it
and a session through the dependencies below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.webhooks.delivery import Clock, Delivery
from services.webhooks.destinations import check_url
from services.webhooks.sealing import SecretBox
from services.webhooks.settings import WebhooksSettings
from services.webhooks.ssrf import Policy, UnsafeUrl
from shared.database import Database


@dataclass
class Service:
    settings: WebhooksSettings
    database: Database
    box: SecretBox
    policy: Policy
    clock: Clock
    delivery: Delivery
    wake_deliverer: Callable[[], None]

    async def check_url(self, url: str, field: tuple[str, ...] = ("body", "url")) -> None:
        """A 422 naming the field when leadflow would refuse to post to ``url``."""
        try:
            await check_url(url, self.policy)
        except UnsafeUrl as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": field, "msg": str(exc), "input": url}]
            ) from None


def app_service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if not isinstance(service, Service):
        raise RuntimeError("the webhooks app's lifespan has not started")
    return service


async def get_service(request: Request) -> Service:
    return app_service(request)


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_session(service: ServiceDep) -> AsyncIterator[AsyncSession]:
    async with service.database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
