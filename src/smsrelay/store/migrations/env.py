"""Alembic environment: runs on the caller's connection, or opens the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from smsrelay.store.tables import metadata


def run_on(connection: Connection) -> None:
    """Run the migrations on an open synchronous connection (in its transaction, if any)."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    """Open the database at `url` the way the application does, and migrate it."""
    from smsrelay.store.database import open_database

    db = open_database(url)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(run_on)
    finally:
        await db.close()


def run_offline(url: str) -> None:
    """Emit the migration SQL without a database (`alembic upgrade --sql`)."""
    context.configure(
        url=url,
        target_metadata=metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_config = context.config
_connection = _config.attributes.get("connection")
if _connection is not None:
    run_on(_connection)
else:
    _url = _config.get_main_option("sqlalchemy.url")
    if not _url:
        raise RuntimeError("no database: pass a connection or set sqlalchemy.url")
    if context.is_offline_mode():
        run_offline(_url)
    else:
        asyncio.run(run_on_url(_url))
