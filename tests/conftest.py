"""Shared database fixtures: every store, dispatch and API test runs on SQLite and PostgreSQL.

`database_url` is a fresh, migrated database per test (a copy of a SQLite file migrated once
per session, or the session's migrated PostgreSQL database, emptied first); `database` is
that database opened. SMSRELAY_TEST_DATABASES=sqlite (or =postgresql) restricts the run
explicitly; by default both are required, and a missing PostgreSQL fails the tests that need
it instead of skipping them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from postgres import PostgresServer, PostgresUnavailable, running_postgres
from smsrelay.store.database import Database, open_database
from smsrelay.store.tables import metadata

KNOWN_DATABASES = ("sqlite", "postgresql")
EVERY_TABLE = tuple(table.name for table in metadata.sorted_tables)


def selected_databases() -> list[str]:
    """The databases named by SMSRELAY_TEST_DATABASES (default: all of them)."""
    raw = os.environ.get("SMSRELAY_TEST_DATABASES", ",".join(KNOWN_DATABASES))
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(KNOWN_DATABASES))
    if unknown or not names:
        raise pytest.UsageError(
            f"SMSRELAY_TEST_DATABASES={raw!r}: use a comma-separated list of "
            f"{', '.join(KNOWN_DATABASES)}"
        )
    return names


DATABASES = selected_databases()


async def _migrate(url: str) -> None:
    db = open_database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole session (started on first use)."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> str:
    """The name of the migrated PostgreSQL database the tests share (emptied per test)."""
    name = "smsrelay_test"
    postgres_server.create_database(name)
    postgres_server.run(_migrate(postgres_server.url(name)))
    return name


def _reset_postgres(server: PostgresServer, name: str) -> None:
    try:
        server.reset_database(name, EVERY_TABLE)
    except asyncpg.PostgresError:
        # A test changed the schema itself (and failed before restoring it): start over.
        server.drop_database(name)
        server.create_database(name)
        server.run(_migrate(server.url(name)))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that per-test databases are copied from."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    # A thread of its own, so this works whether or not a test's event loop is running.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, _migrate(f"sqlite+aiosqlite:///{path}")).result()
    return path


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, migrated database of each selected kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "smsrelay.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name: str = request.getfixturevalue("postgres_database")
    _reset_postgres(server, name)
    yield server.url(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A fresh, migrated database, opened; closed after the test."""
    db = open_database(database_url)
    try:
        yield db
    finally:
        await db.close()
