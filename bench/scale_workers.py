"""Scale-out on PostgreSQL: 1, 2 and 4 `smsrelay worker` processes, one rate-limited connector.

Run `python bench/scale_workers.py [--workers 1,2,4] [--rate 200] [--open 12000]`. It starts a
private PostgreSQL server (as the tests do) and two `minimal_provider.py --record`, one for
the limited connector and one for the others (distinct providers, as they would be: a
provider flooded by the unlimited connectors would stamp the limited requests late, all
together, when it gets to them). Then for
each worker count, on a fresh database: queues `--rate` x 20 s of messages for a connector
limited to `--rate`/s (burst `--burst`) and `--open` messages spread over three unlimited
connectors, starts the workers, and waits until every message is `sent`. From the arrival
times the provider recorded it prints the aggregate rate (first to last arrival), the
unlimited connectors' rate, and the limited connector's rate with the most it received in
any 2-second window against what the limit allows (burst + 2 s x rate, +5%).

A last run starts the largest worker count, SIGKILLs the worker holding the limited
connector's lease a third of the way through, and checks at the provider that no message
was lost (duplicates are only the requests in flight at the kill: at-least-once). Workers
run with SMSRELAY_LEASE_SECONDS=10 so the killed worker's messages come back quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    RunningProvider,
    count_by_status,
    migrated,
    new_secret_box,
    print_table,
    queue_messages,
    running_postgres,
    running_provider,
    save,
    single_connector,
    workdir,
)
from smsrelay.store.connector_leases import lease_holders
from smsrelay.store.database import Database

LIMITED = "limited"
OPEN = ("open-a", "open-b", "open-c")
WINDOW_SECONDS = 2.0
LIMITED_SECONDS = 20  # the limited connector gets this many seconds of messages
LEASE_SECONDS = "10"


@dataclass
class Run:
    """What one run measured."""

    workers: int
    total: int
    aggregate: float
    open_rate: float
    limited_rate: float
    most_in_window: int
    allowed_in_window: float
    lost: int = 0
    duplicates: int = 0

    @property
    def held(self) -> bool:
        return self.most_in_window <= self.allowed_in_window


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of arrivals inside any window of `window` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def start_workers(count: int, env: dict[str, str], log: Path) -> list[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "smsrelay", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            for _ in range(count)
        ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@dataclass(frozen=True)
class Providers:
    """The limited connector's provider and the unlimited connectors' one."""

    limited: RunningProvider
    open: RunningProvider

    async def stats(self) -> dict[str, Any]:
        """Every counter, by connector name (the names are distinct across the two)."""
        return {**await self.limited.stats(), **await self.open.stats()}

    async def reset(self) -> None:
        await self.limited.reset()
        await self.open.reset()


async def prepare(
    db: Database, providers: Providers, rate: float, burst: int, open_count: int
) -> tuple[str, dict[str, list[str]]]:
    """Connectors and queued messages; (secret key, message ids by connector name)."""
    box, key = new_secret_box()
    ids: dict[str, list[str]] = {}
    limited = await save(
        db,
        box,
        single_connector(LIMITED, providers.limited.base_url, per_second=rate, burst=burst),
    )
    ids[LIMITED] = await queue_messages(db, limited.id, int(rate * LIMITED_SECONDS))
    for name in OPEN:
        stored = await save(db, box, single_connector(name, providers.open.base_url))
        ids[name] = await queue_messages(db, stored.id, open_count // len(OPEN))
    return key, ids


async def one_run(
    url: str,
    provider: Providers,
    workers: int,
    options: argparse.Namespace,
    tmp: Path,
    *,
    kill: bool,
) -> Run:
    db = await migrated(url)
    try:
        key, ids = await prepare(db, provider, options.rate, options.burst, options.open)
        total = sum(len(v) for v in ids.values())
        env = {
            **os.environ,
            "SMSRELAY_DATABASE_URL": url,
            "SMSRELAY_SECRET_KEYS": key,
            "SMSRELAY_ALLOW_HOSTS": "127.0.0.1",
            "SMSRELAY_LEASE_SECONDS": LEASE_SECONDS,
            "SMSRELAY_LOG_LEVEL": "warning",
        }
        await provider.reset()
        running = start_workers(workers, env, tmp / "workers.log")
        try:
            if kill:
                await kill_lease_holder(db, provider, running, total)
            async with asyncio.timeout(900):
                while (await count_by_status(db)).get("sent", 0) < total:
                    await asyncio.sleep(0.2)
        finally:
            stop_workers(running)
        return await measure(provider, ids, workers, options)
    finally:
        await db.close()


async def kill_lease_holder(
    db: Database, provider: Providers, running: list[subprocess.Popen[bytes]], total: int
) -> None:
    """SIGKILL the worker holding the limited connector's lease, a third of the way through."""
    while sum(t["messages"] for t in (await provider.stats()).values()) < total // 3:
        await asyncio.sleep(0.1)
    holders = await lease_holders(db)
    owner = next((o for o, _ in holders.values() if o is not None), None)
    pids = {int(owner.split(":")[-2])} if owner else {running[0].pid}
    for worker in running:
        if worker.pid in pids:
            worker.send_signal(signal.SIGKILL)
            worker.wait()


async def measure(
    provider: Providers, ids: dict[str, list[str]], workers: int, options: argparse.Namespace
) -> Run:
    stats = await provider.stats()
    arrivals = {name: stats[name]["arrivals"] for name in ids}
    refs = [ref for name in ids for ref in stats[name]["refs"]]
    every = [t for times in arrivals.values() for t in times]
    opened = [t for name in OPEN for t in arrivals[name]]
    limited = arrivals[LIMITED]
    wanted = {ref for v in ids.values() for ref in v}
    return Run(
        workers=workers,
        total=len(wanted),
        aggregate=len(every) / (max(every) - min(every)),
        open_rate=len(opened) / (max(opened) - min(opened)),
        limited_rate=(len(limited) - options.burst) / (max(limited) - min(limited)),
        most_in_window=most_in_any_window(limited, WINDOW_SECONDS),
        allowed_in_window=options.burst + options.rate * WINDOW_SECONDS * 1.05,
        lost=len(wanted - set(refs)),
        duplicates=len(refs) - len(set(refs)),
    )


async def run(options: argparse.Namespace) -> int:
    counts = [int(n) for n in options.workers.split(",")]
    runs: list[tuple[str, Run]] = []
    with (
        workdir() as tmp,
        running_postgres() as server,
        running_provider(record=True) as limited_provider,
        running_provider(record=True) as open_provider,
    ):
        provider = Providers(limited=limited_provider, open=open_provider)
        for n, workers in enumerate([*counts, max(counts)]):
            kill = n == len(counts)
            url = server.create_database(f"scale_{n}")
            started = time.perf_counter()
            result = await one_run(url, provider, workers, options, tmp, kill=kill)
            label = "kill 1 mid-run" if kill else "-"
            print(f"  {workers} worker(s), {label}: {time.perf_counter() - started:.1f} s")
            runs.append((label, result))
    print_table(
        f"scale-out on PostgreSQL: {len(OPEN)} unlimited connectors + 1 limited to "
        f"{options.rate:g}/s (burst {options.burst})",
        [
            "workers",
            "event",
            "messages",
            "aggregate/s",
            "unlimited/s",
            "limited/s",
            f"most in {WINDOW_SECONDS:g} s (allowed)",
            "limit held",
            "lost",
            "duplicates",
        ],
        [
            [
                r.workers,
                label,
                r.total,
                r.aggregate,
                r.open_rate,
                r.limited_rate,
                f"{r.most_in_window} ({r.allowed_in_window:.0f})",
                "yes" if r.held else "NO",
                r.lost,
                r.duplicates,
            ]
            for label, r in runs
        ],
    )
    return 0 if all(r.held and r.lost == 0 for _, r in runs) else 1


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--rate", type=float, default=50.0, help="the limited rate, per second")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--open", type=int, default=12_000, help="messages for unlimited ones")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
