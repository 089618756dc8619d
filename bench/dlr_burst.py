"""A burst of delivery-report callbacks against a real server: how fast are they stored?

Run `python bench/dlr_burst.py` (SQLite in a temporary directory) or
`python bench/dlr_burst.py --database-url postgresql://user:pw@host/db` (an empty database
or one you do not mind filling). It starts `smsrelay serve` in a child process, creates a
connector, fires `--count` callbacks from a local aiohttp load generator with at most
`--concurrency` in flight, and prints callbacks per second stored durably (every 200 is
answered only after its row is committed), p50/p99 latency, and the stored count. Exits 1
if the number stored differs from the number answered 200.

In the same run it fires the same callbacks at a bare endpoint (`common.bare_dlr_app`: the
same FastAPI and uvicorn, storing nothing) and prints its figures and the ratio, so what
storing costs is told apart from what the machine and the framework cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from common import CORES, running_bare_endpoint, running_server
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.store.api_keys import create_api_key
from smsrelay.store.database import open_database
from smsrelay.store.delivery_reports import count_callbacks

CONNECTOR = "dlr-bench"
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def prepare_database(url: str) -> str:
    """Migrate the database and create an API key for the bench; returns the key."""
    db = open_database(url)
    try:
        await db.migrate()
        _, key = await create_api_key(db, "dlr-bench")
        return key
    finally:
        await db.close()


async def stored_count(url: str) -> int:
    """Callbacks stored in the database (the bench sends no messages, so no others arrive)."""
    db = open_database(url)
    try:
        return await count_callbacks(db)
    finally:
        await db.close()


async def wait_until_up(session: aiohttp.ClientSession, base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base_url}/healthz") as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the server did not answer on {base_url} within {STARTUP_SECONDS:.0f} s")


async def create_connector(session: aiohttp.ClientSession, base_url: str, key: str) -> str:
    """A sandbox-shaped connector matching by our own id (unknown ids are orphaned once)."""
    document: dict[str, Any] = yaml.safe_load(sandbox_connector_yaml(base_url + "/sandbox"))
    document["name"] = CONNECTOR
    document["delivery"]["match"] = "message_id"
    document["delivery"]["message_id"] = "$.client_ref"
    headers = {"Authorization": f"Bearer {key}"}
    async with session.put(
        f"{base_url}/v1/connectors/{CONNECTOR}", json=document, headers=headers
    ) as answer:
        if answer.status != 200:
            raise SystemExit(
                f"creating the connector failed: {answer.status} {await answer.text()}"
            )
        body = await answer.json()
    return str(body["callback_url"])


def report(n: int) -> bytes:
    return json.dumps(
        {
            "id": f"bench-{n}",
            "client_ref": f"01BENCH{n:019d}",
            "to": "+4915112345678",
            "status": "delivered",
            "reason": None,
            "error_code": None,
            "timestamp": "2030-01-01T12:00:00.000Z",
        }
    ).encode()


async def fire(url: str, count: int, concurrency: int) -> tuple[int, list[float], float]:
    """POST `count` callbacks, at most `concurrency` at once; (answered 200, latencies, seconds)."""
    latencies: list[float] = []
    answered = 0
    failures: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            try:
                async with session.post(url, data=report(n), headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            if status == 200:
                answered += 1
            else:
                failures[f"HTTP {status}"] = failures.get(f"HTTP {status}", 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    for what, times in sorted(failures.items()):
        print(f"  not answered 200: {what} x{times}")
    return answered, latencies, elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def bench(database_url: str | None, count: int, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="dlr-bench-") as tmp:
        workdir = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        key = await prepare_database(url)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with running_server(url, port, workdir):
            async with aiohttp.ClientSession() as session:
                await wait_until_up(session, base_url)
                callback_url = await create_connector(session, base_url, key)
            before = await stored_count(url)
            answered, latencies, elapsed = await fire(callback_url, count, concurrency)
            stored = await stored_count(url) - before
        backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
        print(f"{count} callbacks, {concurrency} in flight, {backend}")
        print(f"  answered 200:   {answered}")
        print(f"  stored:         {stored}")
        print(f"  stored per s:   {stored / elapsed:,.0f}")
        if latencies:
            p50 = percentile(latencies, 0.50) * 1000
            p99 = percentile(latencies, 0.99) * 1000
            print(f"  latency:        p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            print(
                f"  mean / max:     {statistics.fmean(latencies) * 1000:.1f} ms / "
                f"{max(latencies) * 1000:.1f} ms"
            )
        await compare_with_bare_endpoint(count, concurrency, stored / elapsed)
        if stored != answered:
            print("  MISMATCH: a callback answered 200 was not stored (or the reverse)")
            return 1
        return 0


async def compare_with_bare_endpoint(count: int, concurrency: int, stored_rate: float) -> None:
    """The same burst against an endpoint that stores nothing (bench/common.py)."""

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running_bare_endpoint(port):
        async with aiohttp.ClientSession() as session:
            await wait_for_bare(session, f"{base_url}/dlr/bare")
        answered, latencies, elapsed = await fire(f"{base_url}/dlr/bare", count, concurrency)
    rate = answered / elapsed
    print(f"bare endpoint (stores nothing), same burst, {CORES} cores")
    print(f"  answered per s: {rate:,.0f}")
    if latencies:
        p50 = percentile(latencies, 0.50) * 1000
        p99 = percentile(latencies, 0.99) * 1000
        print(f"  latency:        p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  stored / bare:  {stored_rate / rate:.2f}")


async def wait_for_bare(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.post(url, data=b"{}") as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the bare endpoint did not answer on {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    sys.exit(asyncio.run(bench(args.database_url, args.count, args.concurrency)))


if __name__ == "__main__":
    main()
