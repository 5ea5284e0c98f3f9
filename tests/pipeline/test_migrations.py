"""The migrations build exactly the schema of tables.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from services.pipeline.migrate import SCHEMA, migrate
from services.pipeline.tables import Base
from shared.database import create_engine
from shared.schema_migrations import alembic_config, command_line
from tests.pipeline.conftest import ScratchDatabases


def _schema_state(connection: Connection) -> tuple[str | None, list[Any], set[str]]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    tables = set(inspect(connection).get_table_names())
    return context.get_current_revision(), compare_metadata(context, Base.metadata), tables


async def schema_state(url: str) -> tuple[str | None, list[Any], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema_state)
    finally:
        await engine.dispose()


def _downgrade(connection: Connection, url: str) -> None:
    config = alembic_config(SCHEMA, url)
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def downgrade_to_base(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade, url)
    finally:
        await engine.dispose()


def head() -> str:
    head = ScriptDirectory.from_config(alembic_config(SCHEMA, "sqlite://")).get_current_head()
    assert head is not None
    return head


async def test_upgrade_to_head_builds_the_models_schema(
    scratch_databases: ScratchDatabases,
) -> None:
    url = await scratch_databases.create()
    # Upgrades at once in one process take turns (alembic's context is process-global).
    await asyncio.gather(migrate(url), migrate(url))
    revision, differences, tables = await schema_state(url)
    assert revision == head()
    assert differences == []
    assert {"leads", "stage_changes", "score_breakdowns", "erasures"} <= tables

    await migrate(url)  # at head already: nothing to do, no error
    assert (await schema_state(url))[0] == head()


async def test_downgrade_and_upgrade_from_the_command_line_and_plain_alembic(
    scratch_databases: ScratchDatabases,
) -> None:
    url = await scratch_databases.create()
    await migrate(url)
    await downgrade_to_base(url)
    revision, _, tables = await schema_state(url)
    assert revision is None
    assert not {"leads", "stage_changes", "score_breakdowns", "erasures"} & tables

    # The CLI runs its own event loop (asyncio.run): give it a thread without one.
    await asyncio.to_thread(command_line, SCHEMA, ["--database-url", url])
    assert (await schema_state(url))[:2] == (head(), [])

    # `alembic upgrade head` with no connection handed over: env.py makes its own engine.
    await downgrade_to_base(url)
    await asyncio.to_thread(command.upgrade, alembic_config(SCHEMA, url), "head")
    assert (await schema_state(url))[:2] == (head(), [])


async def test_a_replica_waits_for_another_replicas_upgrade_on_postgresql(
    scratch_databases: ScratchDatabases,
) -> None:
    """Replicas starting together each migrate; the advisory lock makes them take turns."""
    if scratch_databases.kind != "postgresql":
        return  # SQLite serves one machine and one pipeline process: nothing to race
    url = await scratch_databases.create()
    engine = create_engine(url)
    try:
        async with engine.connect() as other_replica:
            await other_replica.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA.lock_key}
            )
            upgrade = asyncio.create_task(migrate(url))
            done, _ = await asyncio.wait([upgrade], timeout=0.3)
            assert not done, "the upgrade did not wait for the lock"
            await other_replica.commit()  # the other replica's transaction ends
        await asyncio.wait_for(upgrade, timeout=10)
    finally:
        await engine.dispose()
    assert (await schema_state(url))[:2] == (head(), [])


async def test_change_positions_upgrade_over_data_and_downgrade_keep_every_row(
    scratch_databases: ScratchDatabases,
) -> None:
    """Leads written before 0003 get position 0 (a first sync reads them); going back to
    0001 drops the column without touching the history that references leads."""
    url = await scratch_databases.create()
    await migrate(url, "0001")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO leads (lead_id, stage, fit, engagement, total, model_version,"
                    " updated_at) VALUES ('ada', 'lead', 1, 1, 2, 'm', '2026-11-01 09:00:00')"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO stage_changes (lead_id, sequence, change_id, to_stage, reason,"
                    " trigger_event_id, occurred_at, fit, engagement, total, model_version,"
                    " recorded_at) VALUES ('ada', 1, 'c1', 'lead', 'r', 'e1',"
                    " '2026-11-01 09:00:00', 1, 1, 2, 'm', '2026-11-01 09:00:00')"
                )
            )
        await migrate(url)
        async with engine.connect() as connection:
            leads = (await connection.execute(text("SELECT change_position FROM leads"))).all()
            counter = (
                await connection.execute(text("SELECT id, last FROM change_positions"))
            ).all()
        assert [tuple(row) for row in leads] == [(0,)]
        assert [tuple(row) for row in counter] == [(1, 0)]

        config = alembic_config(SCHEMA, url)

        def downgrade(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")

        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
        async with engine.connect() as connection:
            kept = (await connection.execute(text("SELECT count(*) FROM stage_changes"))).scalar()
            columns = await connection.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("leads")}
            )
        assert kept == 1
        assert "change_position" not in columns
    finally:
        await engine.dispose()
