"""Shared set-up for the dispatch, intake and scale benchmarks.

- databases: a temporary SQLite file, or a private PostgreSQL server started the way the
  tests start theirs (`tests/postgres.py`: Debian's server binaries, loopback, fsync off);
- the minimal provider (`minimal_provider.py`) in a process of its own, and its counters;
- connectors pointing at it (one message per request, or batches), and messages queued fast;
- a table printer that always says how many cores the figures were measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/postgres.py: the private PostgreSQL server

from postgres import running_postgres as running_postgres  # noqa: E402
from smsrelay.connectors.definition import ConnectorDefinition, parse_definition  # noqa: E402
from smsrelay.gc_tuning import tune_garbage_collector  # noqa: E402
from smsrelay.store.connectors import StoredConnector, save_connector  # noqa: E402
from smsrelay.store.database import Database, open_database  # noqa: E402
from smsrelay.store.messages import NewMessage, insert_messages, new_message_id  # noqa: E402
from smsrelay.store.secret_box import SecretBox, generate_secret_key  # noqa: E402
from smsrelay.store.tables import messages  # noqa: E402
from smsrelay.store.timestamps import utc_now  # noqa: E402

DATABASES = ("sqlite", "postgresql")
CORES = os.cpu_count() or 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- databases


@contextlib.contextmanager
def database_url(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database of `kind` (`sqlite` or `postgresql`) for one benchmark run."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        return
    with running_postgres() as server:
        yield server.create_database("bench")


def database_kinds(choice: str) -> Sequence[str]:
    """`sqlite`, `postgresql` or `both` as the list of kinds to run."""
    return DATABASES if choice == "both" else (choice,)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A temporary directory that the postgres user may enter (the server lives beneath)."""
    with tempfile.TemporaryDirectory(prefix="smsrelay-bench-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


async def migrated(url: str) -> Database:
    """The database at `url`, opened and migrated."""
    db = open_database(url)
    await db.migrate()
    return db


# ---------------------------------------------------------------- the provider


@dataclass
class RunningProvider:
    """The minimal provider's address and a way to read its counters."""

    base_url: str
    process: subprocess.Popen[bytes]

    async def stats(self) -> dict[str, Any]:
        """Every counter, by connector name (`GET /stats`)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.base_url}/stats") as answer,
        ):
            found: dict[str, Any] = json.loads(await answer.read())
            return found

    async def reset(self) -> None:
        """Forget what was counted so far."""
        async with aiohttp.ClientSession() as session, session.post(f"{self.base_url}/reset"):
            pass


@contextlib.contextmanager
def running_provider(*, record: bool = False) -> Iterator[RunningProvider]:
    """`minimal_provider.py` in a child process on a free port."""
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "minimal_provider.py"), "--port", str(port)]
    if record:
        command.append("--record")
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise SystemExit("the minimal provider did not start")
        yield RunningProvider(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------- connectors and messages


def single_connector(name: str, provider_url: str, **rate_limit: Any) -> ConnectorDefinition:
    """An 8x8-like JSON connector, one message per request, answered `{"id": ...}`."""
    document: dict[str, Any] = {
        "name": name,
        "request": {
            "method": "POST",
            "url": f"{provider_url}/send/{name}",
            "headers": {"Authorization": "Bearer {{secret.api_key}}"},
            "body": {
                "type": "json",
                "json": {
                    "source": "{{sender}}",
                    "destination": "{{to}}",
                    "text": "{{body}}",
                    "ref": "{{message_id}}",
                    "callback": "{{callback_url}}",
                },
            },
        },
        "response": {"message_id": "$.id"},
        "delivery": {
            "message_id": "$.id",
            "status": "$.status",
            "delivered": ["delivered"],
            "failed": ["undelivered"],
        },
        "secrets": {"api_key": "bench-secret-key"},
    }
    if rate_limit:
        document["rate_limit"] = rate_limit
    return parse_definition(document)


def batch_connector(name: str, provider_url: str, size: int = 1000) -> ConnectorDefinition:
    """The same provider's batch endpoint: up to `size` messages per request."""
    document: dict[str, Any] = {
        "name": name,
        "request": {
            "method": "POST",
            "url": f"{provider_url}/batch/{name}",
            "headers": {"Authorization": "Bearer {{secret.api_key}}"},
            "body": {
                "type": "json",
                "json": {"from": "{{sender}}", "callback": "{{callback_url}}"},
            },
        },
        "batch": {
            "size": size,
            "mode": "items",
            "path": "messages",
            "item": {"to": "{{to}}", "text": "{{body}}", "ref": "{{message_id}}"},
        },
        "response": {"message_id": "$.messages[*].id"},
        "delivery": {
            "message_id": "$.id",
            "status": "$.status",
            "delivered": ["delivered"],
            "failed": ["undelivered"],
        },
        "secrets": {"api_key": "bench-secret-key"},
    }
    return parse_definition(document)


def new_secret_box() -> tuple[SecretBox, str]:
    """A secret box and its key (workers in child processes get it as SMSRELAY_SECRET_KEYS)."""
    key = generate_secret_key()
    return SecretBox([key]), key


async def save(db: Database, box: SecretBox, definition: ConnectorDefinition) -> StoredConnector:
    """Save a connector."""
    return await save_connector(db, box, definition)


async def queue_messages(
    db: Database, connector_id: int, count: int, *, sender: str = "BENCH"
) -> list[str]:
    """Queue `count` messages for one connector, due now; returns their ids."""
    now = utc_now()
    ids = [new_message_id() for _ in range(count)]
    chunk = 10_000
    for start in range(0, count, chunk):
        await insert_messages(
            db,
            [
                NewMessage(
                    id=message_id,
                    connector_id=connector_id,
                    to=f"+4915112{n:06d}",
                    created_at=now,
                    body=f"Your code is {n:06d}. Do not share it.",
                    sender_id=sender,
                )
                for n, message_id in enumerate(ids[start : start + chunk], start)
            ],
        )
    return ids


async def count_by_status(db: Database) -> dict[str, int]:
    """How many messages are in each status."""
    async with db.connect() as conn:
        rows = await conn.execute(
            select(messages.c.status, func.count()).group_by(messages.c.status)
        )
        return {str(status): int(n) for status, n in rows}


async def wait_for_sent(db: Database, expected: int, *, timeout: float = 600.0) -> None:
    """Poll until `expected` messages are `sent`."""
    async with asyncio.timeout(timeout):
        while (await count_by_status(db)).get("sent", 0) < expected:
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------- output


def add_dispatch_options(parser: argparse.ArgumentParser) -> None:
    """The options the dispatch benchmarks share: --database, --repeat, --gc."""
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per database, each on a fresh database (one row each: the machine's noise)",
    )
    parser.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned: as `smsrelay worker` runs (smsrelay.gc_tuning); default: CPython's settings",
    )


def dispatch_setup(options: argparse.Namespace) -> list[str]:
    """Apply --gc before anything is measured (the bare client too), as `smsrelay worker`
    does once its start-up is done; the databases to run, from --database."""
    if options.gc == "tuned":
        tune_garbage_collector()
    return list(database_kinds(options.database))


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table, headed by what it measured and on how many cores."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}  ({CORES} cores, Python {sys.version.split()[0]})")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@contextlib.asynccontextmanager
async def client_session(limit: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session with at most `limit` connections."""
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


# ---------------------------------------------------------------- a running server


@contextlib.contextmanager
def running_server(
    database_url: str, port: int, workdir: Path, **settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`smsrelay serve` in a child process; `settings` become SMSRELAY_<NAME> variables."""
    env = {
        **os.environ,
        "SMSRELAY_DATABASE_URL": database_url,
        "SMSRELAY_HOST": "127.0.0.1",
        "SMSRELAY_PORT": str(port),
        "SMSRELAY_SECRET_KEY_FILE": str(workdir / "smsrelay.key"),
        "SMSRELAY_LOG_LEVEL": "warning",
        **{f"SMSRELAY_{name.upper()}": value for name, value in settings.items()},
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "smsrelay", "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def wait_until_up(base_url: str, timeout: float = 60.0) -> None:
    """Poll `/healthz` until the server answers 200."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base_url}/healthz") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the server did not answer on {base_url} within {timeout:.0f} s")


def bare_dlr_app() -> Any:
    """A FastAPI app answering `POST /dlr/{token}` like smsrelay, storing nothing.

    Served by uvicorn as `smsrelay serve` is: the framework's own cost per callback.
    """
    app = FastAPI()

    @app.post("/dlr/{token}")
    async def receive(token: str, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "received"})

    return app


@contextlib.contextmanager
def running_bare_endpoint(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`bare_dlr_app` under uvicorn in a child process, run as `serve` runs (uvloop, httptools)."""
    command = [
        *(sys.executable, "-m", "uvicorn", "common:bare_dlr_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
    ]
    server = subprocess.Popen(command, cwd=ROOT / "bench", stdout=subprocess.DEVNULL)
    try:
        yield server
    finally:
        server.terminate()
        server.wait(timeout=20)
