"""A throwaway PostgreSQL server for the test session, run from Debian's server binaries.

The cluster lives in a temporary directory, listens on 127.0.0.1 at a free port (its unix
socket stays in the same directory) and trades durability for speed (fsync off). As root,
initdb and postgres run as the `postgres` system user, because PostgreSQL refuses root.
Tests share one migrated database, emptied (TRUNCATE) before each test: much faster than
migrating, or than copying a template database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

MISSING_BINARIES = (
    "PostgreSQL server binaries were not found under /usr/lib/postgresql/*/bin. "
    "The store tests run on SQLite and PostgreSQL; `make test` installs the Debian package "
    "`postgresql` (or run `apt-get install postgresql`). To test on SQLite only, set "
    "SMSRELAY_TEST_DATABASES=sqlite."
)

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class PostgresUnavailable(RuntimeError):
    """The server could not be found or started; the message says how to fix it."""


def find_binaries() -> Path:
    """The newest Debian PostgreSQL `bin` directory holding initdb, pg_ctl and postgres."""
    candidates = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for path in candidates:
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    raise PostgresUnavailable(MISSING_BINARIES)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One running cluster; `execute` runs admin SQL on it from any thread."""

    def __init__(self, binaries: Path, root: Path, port: int) -> None:
        self.binaries = binaries
        self.root = root
        self.data = root / "data"
        self.port = port
        self.user = "postgres"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._admin: asyncpg.Connection | None = None
        self._admin_lock = asyncio.Lock()
        self._resetters: dict[str, asyncpg.Connection] = {}

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database on this server."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{tail}"
            )

    def start(self) -> None:
        """initdb and start the server; returns once it accepts connections."""
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and remove its directory."""
        with contextlib.suppress(Exception):
            for database in list(self._resetters):
                self._call(self._forget(database))
            if self._admin is not None:
                self._call(self._admin.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(PostgresUnavailable):
            self._run(
                str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop the server (fast shutdown: every connection is cut), wait, start it again.

        Same data, same port: clients see their connections drop and new ones refused until
        it is back. Blocks until the server accepts connections again.
        """
        with contextlib.suppress(Exception):
            for database in list(self._resetters):
                self._call(self._forget(database))
            if self._admin is not None:
                self._call(self._admin.close())
        self._admin = None
        pg_ctl = str(self.binaries / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self._run(
            pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result(timeout=120)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's own event loop thread and return its result.

        Session-scoped setup uses this instead of `asyncio.run`, so it never depends on
        whether a test's event loop exists at that moment.
        """
        return self._call(coro)

    async def _execute(self, sql: str) -> None:
        # One admin connection serves every request; the lock keeps them in turn.
        async with self._admin_lock:
            if self._admin is None:
                self._admin = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user=self.user, database="postgres"
                )
            await self._admin.execute(sql)

    def execute(self, sql: str) -> None:
        """Run one statement on the `postgres` database (CREATE/DROP DATABASE and such)."""
        self._call(self._execute(sql))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database, optionally as a copy of `template`; returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    async def _reset(self, database: str, tables: Sequence[str]) -> None:
        async with self._admin_lock:
            connection = self._resetters.get(database)
            if connection is None or connection.is_closed():
                connection = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user=self.user, database=database
                )
                self._resetters[database] = connection
            # Connections a previous test left open would block TRUNCATE's locks.
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            names = ", ".join(f'"{table}"' for table in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

    def reset_database(self, database: str, tables: Sequence[str]) -> None:
        """Empty the given tables of a database and restart their id sequences.

        Much faster than copying a template database (which copies the whole catalog).
        """
        self._call(self._reset(database, tables))

    async def _forget(self, database: str) -> None:
        connection = self._resetters.pop(database, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections are still open on it."""
        self._call(self._forget(name))
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server for the duration of the block."""
    binaries = find_binaries()
    root = Path(tempfile.mkdtemp(prefix="smsrelay-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    last_error: PostgresUnavailable | None = None
    # Another process may take the free port between the probe and the bind; try again.
    for _ in range(3):
        server = PostgresServer(binaries, root, free_port())
        try:
            server.start()
        except PostgresUnavailable as exc:
            last_error = exc
            shutil.rmtree(server.data, ignore_errors=True)
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    shutil.rmtree(root, ignore_errors=True)
    assert last_error is not None
    raise last_error
