"""Intake: `POST /v1/messages/batch` of 1000 messages against a running server, accepted/s.

Run `python bench/intake_batch.py [--requests 60] [--size 1000] [--concurrency 2]
[--database both]`. It starts `smsrelay serve` in a child process (sandbox on, so the
default sender exists; dispatcher off, so nothing competes with intake), creates an API
key, and POSTs `--requests` batches of `--size` messages (E.164 numbers, a short text, the
default sender) with `--concurrency` requests in flight. Every 202 is answered only after
its messages are committed. Prints messages accepted per second, the latency of one
batch request (p50/p99) and the server process's CPU time (all threads) per message
accepted. Target: >= 20 000 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aiohttp

from common import (
    client_session,
    count_by_status,
    database_kinds,
    database_url,
    free_port,
    migrated,
    print_table,
    running_server,
    wait_until_up,
    workdir,
)
from smsrelay.store.api_keys import create_api_key


def batch_body(request: int, size: int) -> bytes:
    """One batch request: `size` distinct German mobile numbers with a one-segment text."""
    return json.dumps(
        {
            "messages": [
                {"to": f"+49151{request:03d}{n:05d}", "body": f"Your code is {n:06d}."}
                for n in range(size)
            ]
        }
    ).encode()


async def post_batches(
    base_url: str, key: str, requests: int, size: int, concurrency: int
) -> tuple[int, float, list[float]]:
    """(messages accepted, seconds, latency of each request)."""
    bodies = [batch_body(n, size) for n in range(requests)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    accepted = 0
    next_body = iter(bodies)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        for body in next_body:
            started = time.perf_counter()
            async with session.post(
                f"{base_url}/v1/messages/batch", data=body, headers=headers
            ) as answer:
                document = await answer.json()
                if answer.status != 202:
                    raise SystemExit(f"HTTP {answer.status}: {str(document)[:300]}")
            latencies.append(time.perf_counter() - started)
            accepted += len(document["accepted"])
            if document["rejected"]:
                raise SystemExit(f"rejected: {document['rejected'][:3]}")

    async with client_session(concurrency) as session:
        await client_warm_up(session, base_url, headers)
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return accepted, time.perf_counter() - started, latencies


async def client_warm_up(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]
) -> None:
    """One small batch first: the server compiles the connector and opens its connections."""
    body = json.dumps({"messages": [{"to": "+4915100000000", "body": "warm-up"}]})
    async with session.post(f"{base_url}/v1/messages/batch", data=body, headers=headers) as r:
        if r.status != 202:
            raise SystemExit(f"warm-up: HTTP {r.status}: {await r.text()}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def one_database(kind: str, requests: int, size: int, concurrency: int) -> list[object]:
    with workdir() as tmp, database_url(kind, tmp) as url:
        db = await migrated(url)
        _, key = await create_api_key(db, "intake-bench")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with running_server(url, port, tmp, dispatcher="false", sandbox="true") as server:
            await wait_until_up(base_url)
            cpu_before = process_cpu_seconds(server.pid)
            accepted, elapsed, latencies = await post_batches(
                base_url, key, requests, size, concurrency
            )
            # Includes the warm-up batch of one: negligible beside `requests` x `size`.
            server_cpu = process_cpu_seconds(server.pid) - cpu_before
        queued = (await count_by_status(db)).get("queued", 0)
        await db.close()
    if queued != accepted + 1:  # + the warm-up message
        raise SystemExit(f"{accepted} accepted but {queued - 1} queued")
    return [
        kind,
        requests,
        size,
        concurrency,
        accepted / elapsed,
        f"{percentile(latencies, 0.5) * 1000:.0f}",
        f"{percentile(latencies, 0.99) * 1000:.0f}",
        f"{server_cpu / accepted * 1e6:.0f}",
    ]


async def run(kinds: list[str], requests: int, size: int, concurrency: int) -> None:
    rows = [await one_database(kind, requests, size, concurrency) for kind in kinds]
    print_table(
        f"intake, POST /v1/messages/batch of {size} (target: >= 20,000 messages/s)",
        [
            "database",
            "requests",
            "batch",
            "in flight",
            "messages/s",
            "p50 ms",
            "p99 ms",
            "server CPU µs/msg",
        ],
        rows,
    )


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    options = parser.parse_args()
    asyncio.run(
        run(
            list(database_kinds(options.database)),
            options.requests,
            options.size,
            options.concurrency,
        )
    )


if __name__ == "__main__":
    main()
