"""A burst of delivery-report callbacks against a real server: how fast are they stored?

Run `python bench/dlr_burst.py` (SQLite in a temporary directory, then a private
PostgreSQL server started as the tests start theirs; `--database sqlite|postgresql|both`),
or `--database-url postgresql://user:pw@host/db` for a database of your own (an empty one
or one you do not mind filling). For each it starts `smsrelay serve` in a child process,
creates a connector, fires `--count` callbacks with at most `--concurrency` in flight, and
prints callbacks per second stored durably (every 200 is answered only after its row is
committed), p50/p99 latency, and the CPU time the server spent per callback. Exits 1 if
the number stored differs from the number answered 200.

The load generator runs in a process of its own, so on a 2-core machine the server has
one core and the client the other; its CPU per callback is printed too. By default it is
a minimal HTTP/1.1 keep-alive client (`fire_raw`, about a quarter of aiohttp's CPU per
request); `--client aiohttp` uses aiohttp as before. A short warm-up burst (not counted)
comes first. The server runs without its background work (`SMSRELAY_DISPATCHER=false`):
this measures intake alone, as providers see it; `--mapper` runs the delivery mapper in
the same process, mapping every callback as it arrives (in production it may run in
`smsrelay worker` processes instead).

Latency is in-flight / throughput (Little's law): at 200 in flight a p99 under 50 ms
needs more than 4 000/s, so the default is 32 in flight.

In the same run it fires the same callbacks at a bare endpoint (`common.bare_dlr_app`: the
same FastAPI and uvicorn, storing nothing) and prints its figures, so what storing costs
is told apart from what the machine and the framework cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from common import (
    database_kinds,
    database_url,
    free_port,
    print_table,
    running_bare_endpoint,
    running_server,
    workdir,
)
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.store.api_keys import create_api_key
from smsrelay.store.database import open_database
from smsrelay.store.delivery_reports import count_callbacks

CONNECTOR = "dlr-bench"
STARTUP_SECONDS = 60.0
WARM_UP = 500


@dataclass
class Burst:
    """What the load generator saw of one burst."""

    answered: int = 0  # answered 200
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # the generator process's CPU seconds
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class Figures:
    """One line of the table."""

    target: str
    stored: int
    burst: Burst
    server_cpu: float | None  # the server process's CPU seconds during the burst

    @property
    def rate(self) -> float:
        return self.stored / self.burst.elapsed if self.burst.elapsed else 0.0


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


async def wait_until_up(session: aiohttp.ClientSession, url: str, *, post: bool = False) -> None:
    """Poll `url` (GET, or POST `{}`) until it answers 200."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            request = session.post(url, data=b"{}") if post else session.get(url)
            async with request as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"nothing answered 200 on {url} within {STARTUP_SECONDS:.0f} s")


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


async def fire(url: str, first: int, count: int, concurrency: int) -> Burst:
    """POST `count` callbacks, at most `concurrency` at once."""
    burst = Burst()
    bodies = [report(n) for n in range(first, first + count)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientError as exc:
                what = type(exc).__name__
                burst.failures[what] = burst.failures.get(what, 0) + 1
                continue
            burst.latencies.append(time.perf_counter() - started)
            if status == 200:
                burst.answered += 1
            else:
                burst.failures[f"HTTP {status}"] = burst.failures.get(f"HTTP {status}", 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        burst.elapsed = time.perf_counter() - started
        burst.client_cpu = time.process_time() - cpu
    return burst


async def fire_raw(url: str, first: int, count: int, concurrency: int) -> Burst:
    """`fire` with a minimal HTTP/1.1 client: one keep-alive connection per request in flight.

    The bench's own client shares the machine with the server; this one costs a fraction
    of aiohttp's CPU per request, so more of the second core is left to the server. It
    reads each answer whole (status line, headers, Content-Length body) before the next.
    """
    burst = Burst()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for n in range(first, first + count):
        body = report(n)
        queue.put_nowait(head + str(len(body)).encode() + b"\r\n\r\n" + body)

    def failed(what: str) -> None:
        burst.failures[what] = burst.failures.get(what, 0) + 1

    async def client() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not queue.empty():
            request = queue.get_nowait()
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                reader, writer = connection
                writer.write(request)
                answer_head = await reader.readuntil(b"\r\n\r\n")
                status = int(answer_head[9:12])
                lowered = answer_head.lower()
                at = lowered.find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("an answer without Content-Length")
                length = int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)])
                await reader.readexactly(length)
                if b"\r\nconnection: close" in lowered:
                    writer.close()
                    connection = None
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                failed(type(exc).__name__)
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            burst.latencies.append(time.perf_counter() - started)
            if status == 200:
                burst.answered += 1
            else:
                failed(f"HTTP {status}")
        if connection is not None:
            connection[1].close()

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    burst.elapsed = time.perf_counter() - started
    burst.client_cpu = time.process_time() - cpu
    return burst


def fire_in_this_process(client: str, url: str, first: int, count: int, concurrency: int) -> Burst:
    """`fire` or `fire_raw` with its own event loop (the generator process's entry point)."""
    burst = fire_raw if client == "raw" else fire
    return asyncio.run(burst(url, first, count, concurrency))


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its threads so far (Linux; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def generator_process() -> Iterator[ProcessPoolExecutor]:
    """One child process for the load generator (spawned: no inherited event loop)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(time.sleep, 0).result()  # started and importing before anything is timed
        yield pool


@dataclass(frozen=True)
class Plan:
    """What to fire: how many callbacks, how many in flight, with which client."""

    count: int
    concurrency: int
    client: str  # "raw" (fire_raw) or "aiohttp" (fire)
    mapper: bool


async def generate(pool: ProcessPoolExecutor, plan: Plan, url: str, *, warm_up: bool) -> Burst:
    """One burst from the generator process (a warm-up uses other report ids)."""
    first, count = (plan.count, WARM_UP) if warm_up else (0, plan.count)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        pool, fire_in_this_process, plan.client, url, first, count, plan.concurrency
    )


def cpu_between(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


async def bench_server(pool: ProcessPoolExecutor, plan: Plan, url: str, work: Path) -> Figures:
    """`smsrelay serve` on the database at `url`, one warm-up burst, one measured burst."""
    key = await prepare_database(url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    dispatcher = "true" if plan.mapper else "false"
    with running_server(url, port, work, dispatcher=dispatcher) as server:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, f"{base_url}/healthz")
            callback_url = await create_connector(session, base_url, key)
        await generate(pool, plan, callback_url, warm_up=True)
        before = await stored_count(url)
        cpu_before = process_cpu_seconds(server.pid)
        burst = await generate(pool, plan, callback_url, warm_up=False)
        cpu_after = process_cpu_seconds(server.pid)
        stored = await stored_count(url) - before
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    target = backend + (" + mapper" if plan.mapper else "")
    return Figures(target, stored, burst, cpu_between(cpu_before, cpu_after))


async def bench_bare(pool: ProcessPoolExecutor, plan: Plan) -> Figures:
    """The same burst against an endpoint that stores nothing (bench/common.py)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/dlr/bare"
    with running_bare_endpoint(port) as server:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, url, post=True)
        await generate(pool, plan, url, warm_up=True)
        cpu_before = process_cpu_seconds(server.pid)
        burst = await generate(pool, plan, url, warm_up=False)
        cpu_after = process_cpu_seconds(server.pid)
    target = "bare endpoint (stores nothing)"
    return Figures(target, burst.answered, burst, cpu_between(cpu_before, cpu_after))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def per_callback_us(seconds: float | None, n: int) -> str:
    return "n/a" if seconds is None or not n else f"{seconds / n * 1e6:,.0f}"


def table_row(figures: Figures, concurrency: int) -> list[object]:
    burst = figures.burst
    latencies = burst.latencies or [0.0]
    return [
        figures.target,
        concurrency,
        burst.answered,
        figures.stored,
        round(figures.rate),
        f"{percentile(latencies, 0.50) * 1000:.1f}",
        f"{percentile(latencies, 0.99) * 1000:.1f}",
        f"{statistics.fmean(latencies) * 1000:.1f}",
        per_callback_us(figures.server_cpu, burst.answered),
        per_callback_us(burst.client_cpu, burst.answered),
    ]


async def bench(plan: Plan, kinds: list[str], own_url: str | None, bare: bool) -> int:
    results: list[Figures] = []
    with generator_process() as pool:
        for kind in kinds:
            with workdir() as work, contextlib.ExitStack() as stack:
                url = own_url or stack.enter_context(database_url(kind, work))
                results.append(await bench_server(pool, plan, url, work))
        if bare:
            results.append(await bench_bare(pool, plan))
    print_table(
        f"DLR burst: {plan.count} callbacks, {plan.concurrency} in flight, "
        f"{plan.client} client in its own process",
        [
            "server",
            "in flight",
            "answered 200",
            "stored",
            "per s",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "server CPU µs/cb",
            "client CPU µs/cb",
        ],
        [table_row(figures, plan.concurrency) for figures in results],
    )
    print(f"  load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = 0
    for figures in results:
        for what, times in sorted(figures.burst.failures.items()):
            print(f"  {figures.target}: not answered 200: {what} x{times}")
        if figures.target.startswith("bare"):
            continue
        if figures.stored != figures.burst.answered:
            print(
                f"  {figures.target}: MISMATCH: answered 200 {figures.burst.answered}, "
                f"stored {figures.stored}"
            )
            failed = 1
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--database-url", help="a database of your own (instead of --database)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32, help="callbacks in flight")
    parser.add_argument(
        "--mapper", action="store_true", help="run the delivery mapper in the server too"
    )
    parser.add_argument(
        "--client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="load generator: a minimal HTTP/1.1 client (default) or aiohttp",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare endpoint")
    args = parser.parse_args()
    plan = Plan(args.count, args.concurrency, args.client, args.mapper)
    kinds = ["own"] if args.database_url else list(database_kinds(args.database))
    sys.exit(asyncio.run(bench(plan, kinds, args.database_url, not args.no_bare)))


if __name__ == "__main__":
    main()
