"""Engines and sessions: the one place that knows how each database is tuned.

Engines are created inside the app lifespan (or a test fixture) and disposed
there: an engine outlives neither its event loop nor its owner.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)


def create_engine(
    database_url: str, *, sqlite_busy_timeout_ms: int = 5000, sqlite_immediate: bool = False
) -> AsyncEngine:
    """An async engine; SQLite connections get WAL, a busy timeout, foreign keys, real BEGINs.

    WAL lets the REST readers run while the consumer writes; the busy timeout
    makes a second writer wait instead of failing at once with "database is
    locked"; SQLite enforces foreign keys only when asked, per connection.
    Python's sqlite3 driver starts transactions lazily, only before DML, so
    DDL (a migration) would run outside any transaction; emitting BEGIN
    ourselves makes every SQLAlchemy transaction a real one. ``sqlite_immediate``: BEGIN
    IMMEDIATE, for a database that several tasks write after reading (webhooks): a
    deferred transaction that reads and then writes while another writes fails at once
    with "database is locked", busy timeout or not; an immediate one waits its turn.
    """
    engine = create_async_engine(database_url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        timeout = int(sqlite_busy_timeout_ms)
        begin = "BEGIN IMMEDIATE" if sqlite_immediate else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _tune_sqlite(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None  # the driver's own BEGINs off
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={timeout}")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit: no lazy refresh in async code."""
    return async_sessionmaker(engine, expire_on_commit=False)


@dataclass(frozen=True)
class Database:
    """An engine and its session factory, owned by one app lifespan."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(
        cls,
        database_url: str,
        *,
        sqlite_busy_timeout_ms: int = 5000,
        sqlite_immediate: bool = False,
    ) -> Database:
        engine = create_engine(
            database_url,
            sqlite_busy_timeout_ms=sqlite_busy_timeout_ms,
            sqlite_immediate=sqlite_immediate,
        )
        return cls(engine=engine, sessions=create_session_factory(engine))

    async def is_reachable(self, timeout: float) -> bool:
        """``SELECT 1`` within ``timeout``: readiness must answer even when the database hangs."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("database is not reachable: %s", exc)
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def upsert_insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ON CONFLICT clauses: both databases spell them alike, each
    dialect in its own module."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"leadflow supports SQLite and PostgreSQL, not {dialect}")
