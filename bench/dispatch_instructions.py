"""Dispatch, one message per request, counted in CPU instructions instead of seconds.

Run `python bench/dispatch_instructions.py [--small 400] [--large 1200]` (needs Debian's
`valgrind`). The same work as `dispatch_unbatched.py` (SQLite), each part in a process of
its own under callgrind, which counts the instructions every thread executes:

- **bare client**: 32 aiohttp coroutines POSTing to `minimal_provider.py`;
- **dispatcher**: `Dispatcher.run_once` taking queued messages to `sent` through it;
- **without the network**: the dispatcher again, its transport answering from memory;
- **queueing**: migrating and queueing alone, taken off the two dispatcher counts.

Each runs twice, with `--small` and `--large` messages; the difference over the difference
in messages is the count per message, start-up and imports cancelled out. The provider
runs outside valgrind.

The counts are the same from run to run within a few thousand instructions, whatever else
the machine does, where the rates of `dispatch_unbatched.py` move by up to 2x within
minutes on a shared machine: a change to the send path shows here in instructions per
message. They are not time: cache misses and waits cost time and no instructions, so the
instruction ratio is an upper bound of the rate ratio when the main thread is the limit.
Under valgrind everything runs ~50x slower against a provider that is not, so group commits
are larger than in a real run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    database_url,
    print_table,
    running_provider,
    workdir,
)
from dispatch_unbatched import bare_client, dispatcher_run, queued
from smsrelay.gc_tuning import tune_garbage_collector

CONCURRENCY = 32
PARTS = ("bare", "dispatch", "offline", "queue")
# Valgrind runs the dispatcher ~50x slower: a lease long enough for every message claimed.
LEASE_SECONDS = 3600.0
_SUMMARY = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)


async def child(part: str, count: int) -> None:
    """One part of the benchmark, in the process valgrind counts."""
    tune_garbage_collector()
    with running_provider() as provider:
        if part == "bare":
            await bare_client(f"{provider.base_url}/send/bare", count, CONCURRENCY)
            return
        with workdir() as tmp, database_url("sqlite", tmp) as url:
            if part == "queue":
                db, _box = await queued(url, provider.base_url, count, CONCURRENCY)
                await db.close()
                return
            await dispatcher_run(
                url,
                provider.base_url,
                count,
                CONCURRENCY,
                network=part == "dispatch",
                lease_seconds=LEASE_SECONDS,
            )


def main_thread_instructions(out: Path) -> int:
    """The main thread's count in a callgrind output (`--separate-threads`: thread 1)."""
    found = _SUMMARY.search(Path(f"{out}-01").read_bytes())
    if found is None:
        raise SystemExit(f"no instruction summary in {out}-01")
    return int(found.group(1))


def counted(part: str, small: int, large: int, folder: Path) -> float:
    """Instructions per message of the main thread for `part` (both sizes run at once)."""
    runs = []
    for count in (small, large):
        out = folder / f"{part}-{count}.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            part,
            str(count),
        ]
        log = (folder / f"{part}-{count}.log").open("wb")
        runs.append((out, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
    totals = []
    for out, log, process in runs:
        process.wait()
        log.close()
        if process.returncode != 0:
            tail = Path(log.name).read_text(errors="replace")[-2000:]
            raise SystemExit(f"{part} under valgrind exited {process.returncode}:\n{tail}")
        totals.append(main_thread_instructions(out))
    return (totals[1] - totals[0]) / (large - small)


def run(small: int, large: int) -> None:
    with tempfile.TemporaryDirectory(prefix="smsrelay-callgrind-") as tmp:
        per = {part: counted(part, small, large, Path(tmp)) for part in PARTS}
    bare = per["bare"]
    dispatch = per["dispatch"] - per["queue"]
    offline = per["offline"] - per["queue"]
    row = [
        "sqlite",
        f"{small}/{large}",
        f"{bare / 1000:.0f}",
        f"{dispatch / 1000:.0f}",
        f"{bare / dispatch:.2f}",
        f"{offline / 1000:.0f}",
        f"{(dispatch - bare) / 1000:.0f}",
        f"{bare * (1 / 0.7 - 1) / 1000:.0f}",
    ]
    print_table(
        "dispatch, one message per request: main-thread instructions per message, thousands",
        [
            "database",
            "messages",
            "bare k",
            "dispatcher k",
            "instruction ratio",
            "without network k",
            "dispatcher - bare k",
            "budget at 0.70 k",
        ],
        [row],
    )


def main() -> None:
    """Parse the arguments and run the benchmark (or, with `--child`, one part of it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--child", nargs=2, metavar=("PART", "COUNT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        part, count = options.child
        if part not in PARTS:
            raise SystemExit(f"--child part must be one of {', '.join(PARTS)}, not {part!r}")
        asyncio.run(child(part, int(count)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    if not 0 < options.small < options.large:
        raise SystemExit("--small must be above 0 and below --large")
    run(options.small, options.large)


if __name__ == "__main__":
    main()
