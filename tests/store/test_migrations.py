"""The migrations build exactly the schema `store/tables.py` declares, on both databases."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, insert, inspect, select, text
from sqlalchemy.engine import Connection

from smsrelay.connectors.definition import ConnectorDefinition, parse_definition
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import NewMessage, insert_messages, new_message_id
from smsrelay.store.migrations import downgrade_to_base, migration_config, upgrade_to_head
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.tables import messages, metadata, provider_ids
from smsrelay.store.timestamps import utc_now


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


async def test_provider_ids_keep_their_rows_across_0009_and_still_cascade(
    database: Database,
) -> None:
    async with database.transaction() as conn:
        await conn.run_sync(
            lambda sync: command.downgrade(migration_config(connection=sync), "0008")
        )
    connector = await save_connector(database, SecretBox([generate_secret_key()]), _definition())
    message_id = new_message_id()
    await insert_messages(
        database,
        [
            NewMessage(
                id=message_id,
                connector_id=connector.id,
                to="+4915112340001",
                created_at=utc_now(),
                body="x",
            )
        ],
    )
    async with database.transaction() as conn:
        await conn.execute(
            insert(provider_ids).values(
                connector_id=connector.id,
                provider_id="p-1",
                message_id=message_id,
                recipient="+4915112340001",
            )
        )
        await conn.run_sync(upgrade_to_head)

    async with database.connect() as conn:
        rows = (
            await conn.execute(select(provider_ids.c.provider_id, provider_ids.c.message_id))
        ).all()
        differences = await conn.run_sync(_schema_differences)
        if database.is_sqlite:
            created = (
                await conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'provider_ids'")
                )
            ).scalar_one()
            assert "WITHOUT ROWID" in created.upper()
    assert [tuple(row) for row in rows] == [("p-1", message_id)]
    assert differences == []
    async with database.transaction() as conn:
        await conn.execute(delete(messages).where(messages.c.id == message_id))
    async with database.connect() as conn:
        left = (await conn.execute(select(provider_ids.c.provider_id))).all()
    assert left == []


def _definition() -> ConnectorDefinition:
    return parse_definition(
        {
            "name": "acme",
            "request": {
                "url": "http://127.0.0.1:9/send",
                "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
            },
            "response": {"message_id": "$.id"},
        }
    )
