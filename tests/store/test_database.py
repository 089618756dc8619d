"""The database handle: SQLite tuning and write locking, URLs, timestamps on both databases."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from smsrelay.store.database import Database, async_url, open_database
from smsrelay.store.tables import api_keys


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    async with db.transaction() as conn:
        await conn.execute(text("CREATE TABLE t (v INTEGER)"))
    yield db
    await db.close()


async def test_sqlite_connections_are_tuned(sqlite_db: Database) -> None:
    async with sqlite_db.connect() as conn:
        pragmas = {
            name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 10000,
        "foreign_keys": 1,
    }


async def test_sqlite_write_transaction_takes_the_write_lock_at_once(
    sqlite_db: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "x.db", timeout=0, isolation_level=None)
    try:
        async with sqlite_db.transaction():
            # Nothing written yet, but another writer is already locked out.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_sqlite_reads_do_not_block_writers(sqlite_db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "x.db", timeout=0, isolation_level=None)
    try:
        async with sqlite_db.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM t"))
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO t VALUES (1)")
            other.execute("COMMIT")
    finally:
        other.close()


async def test_a_failed_transaction_leaves_nothing_behind(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_db.transaction() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("abort")
    async with sqlite_db.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM t"))).scalar()
    assert count == 0


def test_urls_get_their_async_driver() -> None:
    assert async_url("sqlite:///./smsrelay.db") == "sqlite+aiosqlite:///./smsrelay.db"
    assert async_url("postgresql://u:p@db/smsrelay") == "postgresql+asyncpg://u:p@db/smsrelay"
    assert async_url("postgres://u@db/x") == "postgresql+asyncpg://u@db/x"
    assert async_url("postgresql+asyncpg://u@db/x") == "postgresql+asyncpg://u@db/x"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://u@db/x")


async def test_timestamps_come_back_as_the_same_instant_in_utc(database: Database) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2024, 3, 1, 17, 30, 15, 123456, tzinfo=india)
    async with database.transaction() as conn:
        await conn.execute(
            api_keys.insert().values(name="k", prefix="sr_x", key_hash="h", created_at=created)
        )
    async with database.connect() as conn:
        stored = (await conn.execute(select(api_keys.c.created_at))).scalar_one()
    assert stored == created
    assert stored.tzinfo is UTC
    assert stored == datetime(2024, 3, 1, 12, 0, 15, 123456, tzinfo=UTC)


async def test_naive_timestamps_are_refused(database: Database) -> None:
    with pytest.raises(Exception, match="timezone-aware"):
        async with database.transaction() as conn:
            await conn.execute(
                api_keys.insert().values(
                    name="k", prefix="sr_x", key_hash="h", created_at=datetime(2024, 1, 1)
                )
            )


async def test_dialect_names(database: Database, database_url: str) -> None:
    assert database.dialect == ("sqlite" if database_url.startswith("sqlite") else "postgresql")


async def count_rows(db: Database) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_write_at_once_commits_one_transaction_on_its_own_thread(
    sqlite_db: Database,
) -> None:
    assert sqlite_db.writes_at_once

    def write(conn: sqlite3.Connection) -> tuple[bool, str]:
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        return conn.in_transaction, threading.current_thread().name

    in_transaction, thread = await sqlite_db.write_at_once(write)
    assert in_transaction and thread.startswith("smsrelay-writer")
    assert await count_rows(sqlite_db) == 2


async def test_write_at_once_leaves_checkpoints_to_a_thread_of_their_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    db = open_database(f"sqlite:///{path}")
    async with db.transaction() as conn:
        await conn.execute(text("CREATE TABLE t (v TEXT)"))

    def write(conn: sqlite3.Connection) -> int:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 8000,)] * 256)
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    try:
        # ~2 MB: below SQLite's own threshold (1000 pages), and the writer's is off.
        assert await db.write_at_once(write) == 0
        # Copied to the database file in the background, while the database stays open.
        for _ in range(100):
            if path.stat().st_size >= 2_000_000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size >= 2_000_000
        assert any(t.name.startswith("smsrelay-checkpoint") for t in threading.enumerate())
    finally:
        await db.close()
    assert not any(t.name.startswith("smsrelay-") for t in threading.enumerate())


async def test_write_at_once_rolls_back_what_raised(sqlite_db: Database) -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("not this")

    with pytest.raises(ValueError, match="not this"):
        await sqlite_db.write_at_once(write)
    assert await count_rows(sqlite_db) == 0
    # The connection is usable again.
    await sqlite_db.write_at_once(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))
    assert await count_rows(sqlite_db) == 1


async def test_write_at_once_rolls_back_when_its_caller_is_cancelled(
    sqlite_db: Database,
) -> None:
    started, go_on = threading.Event(), threading.Event()

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        started.set()
        go_on.wait(5)

    task = asyncio.create_task(sqlite_db.write_at_once(write))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # it waits for the thread, so the turn is not given up early
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count_rows(sqlite_db) == 0


async def test_write_at_once_hands_the_turn_on_before_its_caller_goes_on(
    sqlite_db: Database,
) -> None:
    """The next writer waiting for the turn takes it (and hands its work to the thread)
    before the caller of a finished write runs on: a claim builds thousands of messages
    right after its write, and the group commit behind it waited for that."""
    first_in, second_in, go_on = threading.Event(), threading.Event(), threading.Event()

    def write(entered: threading.Event) -> Callable[[sqlite3.Connection], None]:
        def work(conn: sqlite3.Connection) -> None:
            entered.set()
            go_on.wait(5)

        return work

    async def first() -> bool:
        await sqlite_db.write_at_once(write(first_in))
        # Checked before this task awaits anything again.
        return second_in.wait(5)

    first_task = asyncio.create_task(first())
    await asyncio.to_thread(first_in.wait, 5)
    second_task = asyncio.create_task(sqlite_db.write_at_once(write(second_in)))
    await asyncio.sleep(0.01)  # waiting for the turn
    assert not second_in.is_set()
    go_on.set()
    assert await first_task
    await second_task


async def test_write_at_once_takes_turns_with_the_other_write_transactions(
    sqlite_db: Database,
) -> None:
    inside = threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        inside.set()
        time.sleep(0.3)  # longer than nothing, shorter than the busy timeout

    async def then_write() -> list[int]:
        await asyncio.to_thread(inside.wait, 5)
        async with sqlite_db.transaction() as conn:
            # Waited for the writer turn: the first transaction is committed.
            seen = list((await conn.execute(text("SELECT v FROM t"))).scalars())
            await conn.execute(text("INSERT INTO t VALUES (2)"))
        return seen

    _, seen = await asyncio.gather(sqlite_db.write_at_once(slow_write), then_write())
    assert seen == [1]
    assert await count_rows(sqlite_db) == 2


async def test_write_at_once_refuses_to_run_inside_a_write_transaction(
    sqlite_db: Database,
) -> None:
    async with sqlite_db.transaction():
        with pytest.raises(RuntimeError, match="inside a write transaction"):
            await sqlite_db.write_at_once(lambda conn: None)


@pytest.mark.parametrize(
    ("url", "at_once"),
    [
        ("sqlite:///{tmp}/x.db", True),
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
        ("sqlite:///file:{tmp}/x.db?mode=rwc&uri=true", False),
    ],
)
async def test_only_a_sqlite_file_is_written_at_once(
    url: str, at_once: bool, tmp_path: Path
) -> None:
    db = open_database(url.format(tmp=tmp_path))
    try:
        assert db.writes_at_once is at_once
    finally:
        await db.close()


async def test_postgresql_is_not_written_at_once(database: Database) -> None:
    # The shared fixture's SQLite databases are files.
    assert database.writes_at_once is database.is_sqlite
