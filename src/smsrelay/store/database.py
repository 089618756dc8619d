"""The database handle: one AsyncEngine, write transactions, reads, migrations.

SQLite is tuned on every new connection (WAL, synchronous=NORMAL, a busy timeout, foreign
keys) and its driver's own transaction handling is switched off, so that a write
transaction starts with `BEGIN IMMEDIATE`: the write lock is taken up front and waits out
the busy timeout, instead of a deferred transaction failing with "database is locked" when
it first writes after reading. Reads start a plain deferred `BEGIN` (a consistent snapshot
that never blocks a writer under WAL).

SQLite has one writer at a time. The write transactions of one process queue for it on an
asyncio lock, so the next begins the moment the last commits, instead of in SQLite's busy
handler, which sleeps up to 100 ms between tries (a claim waiting behind a group commit
lost tens of milliseconds each time). Other processes still meet the busy handler.

The hottest write transactions (claims and group commits of the dispatcher) run on a
writer thread with a connection of its own (`write_at_once`): all their statements in one
hop from the event loop, so the writer turn is not held while the loop is busy elsewhere.
That connection leaves WAL checkpoints to a thread of their own (`_checkpoint_soon`): a
checkpoint run by the commit that crossed SQLite's threshold copied pages back to the
database file while the writer turn was held (bench/README.md, sixth round).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal, TypeAlias, TypeVar

from sqlalchemy import Insert, Row, Table, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql"]
# A result row of any shape (SQLAlchemy types rows by their columns).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]
T = TypeVar("T")

# Set on a connection by `Database.transaction` and read by the `begin` listener.
_WRITE = "smsrelay_write"
# Serialises `migrate()` across processes starting at once on one PostgreSQL database.
_MIGRATION_LOCK_KEY = 0x736D7372656C6179  # "smsrelay"

# Set while a task holds its process's SQLite writer turn: a write transaction opened inside
# another (never on purpose) goes straight to SQLite instead of waiting on itself forever.
_HOLDS_WRITER_TURN: ContextVar[bool] = ContextVar("smsrelay_holds_writer_turn", default=False)

_SQLITE_PRAGMAS = (
    # Before WAL, so that it applies when the file is new (an existing file keeps its own).
    # 8 KiB pages (PostgreSQL's size): a group commit writes half as many WAL frames, and
    # the checkpoint copies half as many pages, as with SQLite's default 4 KiB
    # (bench/dispatch_batched.py: commit time -30%, messages/s +15%).
    "PRAGMA page_size=8192",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)
# The writer thread's connection: its commits never checkpoint (see `_checkpoint_soon`).
_WRITER_PRAGMAS = (*_SQLITE_PRAGMAS, "PRAGMA wal_autocheckpoint=0")
# While writes go on, a background checkpoint starts at most this often (seconds).
CHECKPOINT_INTERVAL = 0.2


class Database:
    """A SQLite or PostgreSQL database, reached through one async engine and its pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        name = engine.dialect.name
        if name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {name!r}: use SQLite or PostgreSQL")
        self.engine = engine
        self.dialect: Dialect = "sqlite" if name == "sqlite" else "postgresql"
        # SQLite: the writer turn of this process, on the loop it was made for.
        self._writer_turn: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._writer_connection: sqlite3.Connection | None = None
        # The WAL checkpoints of the writer thread's commits, on a thread of their own.
        self._checkpoint_thread: ThreadPoolExecutor | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None
        self._checkpointing = False
        self._checkpoint_started = float("-inf")

    @property
    def is_sqlite(self) -> bool:
        """True for SQLite, where writers are serialised by the database file lock."""
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (`BEGIN IMMEDIATE` on SQLite), committed when the block ends.

        On SQLite it first waits for this process's writer turn (see the module docstring).
        """
        if not self.is_sqlite or _HOLDS_WRITER_TURN.get():
            async with self._write_transaction() as conn:
                yield conn
            return
        async with self._sqlite_writer_turn():
            held = _HOLDS_WRITER_TURN.set(True)
            try:
                async with self._write_transaction() as conn:
                    yield conn
            finally:
                _HOLDS_WRITER_TURN.reset(held)

    @property
    def writes_at_once(self) -> bool:
        """True where `write_at_once` can run: a SQLite database in a file."""
        if not self.is_sqlite:
            return False
        url = self.engine.url
        # A URL with options (`mode=memory`, `uri=true`...) is left to the pool's driver.
        return url.database not in (None, "", ":memory:") and not url.query

    async def write_at_once(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite in a file: run `work` as one write transaction on the writer thread.

        `work` gets a plain sqlite3 connection inside `BEGIN IMMEDIATE` and is committed
        when it returns, rolled back if it raises. Its statements run one after another on
        one thread, in one hop from the event loop and back, instead of one hop each way
        per statement (aiosqlite): the writer turn is held for the SQL alone, not for the
        loop's time to come back to the transaction between statements.

        Cancelled while it runs, the transaction is rolled back unless it has already
        committed; then the result is returned and the cancellation is delivered at the
        caller's next await.
        """
        if _HOLDS_WRITER_TURN.get():
            # The enclosing transaction holds SQLite's write lock on another connection.
            raise RuntimeError("write_at_once inside a write transaction would wait on itself")
        async with self._sqlite_writer_turn():
            if self._writer_thread is None:
                self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="smsrelay-writer")
            cancelled = threading.Event()
            loop = asyncio.get_running_loop()
            done = loop.run_in_executor(self._writer_thread, self._write_now, work, cancelled)
            try:
                result = await asyncio.shield(done)
            except asyncio.CancelledError:
                cancelled.set()
                try:
                    result = await _uncancellable(done)
                except Exception:
                    raise asyncio.CancelledError from None  # rolled back
                task = asyncio.current_task()
                if task is not None:
                    task.cancel()
                return result
        # The next writer waiting for the turn hands its work to the thread before this
        # caller goes on with its own (a claim builds thousands of messages next).
        await asyncio.sleep(0)
        return result

    def _write_now(self, work: Callable[[sqlite3.Connection], T], cancelled: threading.Event) -> T:
        # On the writer thread.
        conn = self._writer_connection
        if conn is None:
            conn = self._writer_connection = self._sqlite_connection(_WRITER_PRAGMAS)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            if cancelled.is_set():
                raise _RolledBack
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) can leave the transaction open.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._checkpoint_soon()
        return result

    def _sqlite_connection(self, pragmas: tuple[str, ...]) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.engine.url.database), isolation_level=None, check_same_thread=False
        )
        for pragma in pragmas:
            conn.execute(pragma)
        return conn

    def _checkpoint_soon(self) -> None:
        """After a commit on the writer thread: start a background WAL checkpoint unless
        one runs or one started less than `CHECKPOINT_INTERVAL` ago.

        The checkpoint is PASSIVE: it copies what it can to the database file without
        waiting for readers or the writer, and the WAL is reused from its start once all of
        it has been copied (as with SQLite's own checkpoints). Other connections keep
        SQLite's automatic checkpoints, so the WAL stays bounded even without this one.
        """
        now = time.monotonic()
        if self._checkpointing or now - self._checkpoint_started < CHECKPOINT_INTERVAL:
            return
        self._checkpointing, self._checkpoint_started = True, now
        try:
            if self._checkpoint_thread is None:
                self._checkpoint_thread = ThreadPoolExecutor(
                    1, thread_name_prefix="smsrelay-checkpoint"
                )
            self._checkpoint_thread.submit(self._checkpoint)
        except RuntimeError:  # closing: the last connection's close checkpoints
            self._checkpointing = False

    def _checkpoint(self) -> None:
        # On the checkpoint thread.
        try:
            conn = self._checkpoint_connection
            if conn is None:
                conn = self._checkpoint_connection = self._sqlite_connection(_SQLITE_PRAGMAS)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed (tried again after the next commit): %s", exc)
        finally:
            self._checkpointing = False

    def _sqlite_writer_turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        turn = self._writer_turn
        if turn is None or turn[0] is not loop:
            turn = self._writer_turn = (loop, asyncio.Lock())
        return turn[1]

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; anything it starts is rolled back when the block ends."""
        async with self.engine.connect() as conn:
            yield conn

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from many processes)."""
        from smsrelay.store.migrations import upgrade_to_head

        async with self.transaction() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(upgrade_to_head)

    async def close(self) -> None:
        """Close every pooled connection (and the writer thread's)."""
        loop = asyncio.get_running_loop()
        # The writer first (its last commit may start a checkpoint). Each connection is
        # closed on its own thread, after whatever that thread is doing.
        writer, self._writer_thread = self._writer_thread, None
        if writer is not None:
            await loop.run_in_executor(writer, _close_connection, self, "_writer_connection")
            writer.shutdown()
        checkpointer, self._checkpoint_thread = self._checkpoint_thread, None
        if checkpointer is not None:
            await loop.run_in_executor(
                checkpointer, _close_connection, self, "_checkpoint_connection"
            )
            checkpointer.shutdown()
        await self.engine.dispose()


def _close_connection(db: Database, name: str) -> None:
    # On the thread that owns the connection.
    conn = getattr(db, name)
    setattr(db, name, None)
    if conn is not None:
        conn.close()


class _RolledBack(Exception):
    """A `write_at_once` transaction rolled back because its caller was cancelled."""


async def _uncancellable(future: asyncio.Future[T]) -> T:
    """Wait for `future` to finish even if cancelled again meanwhile."""
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()


def async_url(url: str) -> str:
    """The URL with its async driver: `sqlite+aiosqlite`, `postgresql+asyncpg`."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: "
        "use sqlite:///path/to/file.db or postgresql://user:password@host/dbname"
    )


def open_database(url: str, **engine_options: Any) -> Database:
    """Open (not yet migrate) the database at `url`; SQLite and PostgreSQL are supported."""
    full_url = async_url(url)
    if full_url.startswith("sqlite"):
        engine = create_async_engine(full_url, **engine_options)
        _tune_sqlite(engine)
    else:
        engine_options.setdefault("pool_pre_ping", True)
        engine = create_async_engine(full_url, **engine_options)
    return Database(engine)


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the `begin` listener below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def insert_ignoring_duplicates(db: Database, table: Table) -> Insert:
    """An INSERT that skips rows violating a unique constraint (ON CONFLICT DO NOTHING).

    Unlike catching the error, this leaves a PostgreSQL transaction usable, and the
    affected row count tells whether the row was new.
    """
    if db.is_sqlite:
        return sqlite_insert(table).on_conflict_do_nothing()
    return postgresql_insert(table).on_conflict_do_nothing()
