"""Alembic migrations, configured in code: no alembic.ini is needed to run them.

One history serves SQLite and PostgreSQL (`render_as_batch=True` lets SQLite alter tables
by copying them). To write a new migration after changing `store/tables.py`::

    from smsrelay.store.migrations import migration_config
    from alembic import command
    command.revision(migration_config("sqlite:///./dev.db"), "what changed", autogenerate=True)

then edit the generated file to use plain SQLAlchemy types (a migration must not change
when application code does) and run the store tests, which compare the migrated schema
with `tables.metadata` on both databases.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent


def migration_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic configuration for our migrations, on a URL or an open connection."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    """Apply every pending migration inside the caller's transaction."""
    command.upgrade(migration_config(connection=connection), "head")


def downgrade_to_base(connection: Connection) -> None:
    """Undo every migration inside the caller's transaction (drops all tables)."""
    command.downgrade(migration_config(connection=connection), "base")
