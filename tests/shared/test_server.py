"""Serving: what exists once an app has started is out of the cyclic collector's sight."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from shared.server import freeze_after_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def tracked(target: object) -> bool:
    """Whether the collector walks ``target`` (frozen objects are in no generation)."""
    return any(candidate is target for candidate in gc.get_objects())


async def test_what_startup_built_is_frozen_and_the_lifespan_still_runs(unfrozen: None) -> None:
    seen: list[str] = []
    built: dict[str, list[object]] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        built["cache"] = [object()]  # a container: tracked by the collector
        seen.append("started")
        yield
        seen.append("stopped")

    app = FastAPI(lifespan=lifespan)
    freeze_after_startup(app)
    async with LifespanManager(app):
        assert seen == ["started"]
        assert not tracked(built["cache"])
        later: list[object] = []
        assert tracked(later)  # objects made while serving are collected as before
    assert seen == ["started", "stopped"]
