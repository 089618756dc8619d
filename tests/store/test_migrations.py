"""The migrations build exactly the schema `store/tables.py` declares, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from smsrelay.store.database import Database
from smsrelay.store.migrations import downgrade_to_base, upgrade_to_head
from smsrelay.store.tables import metadata


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_matches_the_declared_tables(database: Database) -> None:
    async with database.connect() as conn:
        differences = await conn.run_sync(_schema_differences)
    assert differences == []


async def test_migrations_downgrade_to_nothing_and_upgrade_again(database: Database) -> None:
    async with database.transaction() as conn:
        await conn.run_sync(downgrade_to_base)
    async with database.connect() as conn:
        left = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert left <= {"alembic_version"}

    async with database.transaction() as conn:
        await conn.run_sync(upgrade_to_head)
    async with database.connect() as conn:
        differences = await conn.run_sync(_schema_differences)
    assert differences == []


async def test_migrate_twice_is_harmless(database: Database) -> None:
    await database.migrate()
    async with database.connect() as conn:
        differences = await conn.run_sync(_schema_differences)
    assert differences == []
