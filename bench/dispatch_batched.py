"""Dispatch in batches of 1000 messages per request: messages per second to `sent`.

Run `python bench/dispatch_batched.py [--count N] [--batch 1000] [--database both]`. For each
database it queues N messages for one batch connector (JSON items, `$.messages[*].id` read
back per message) pointing at `minimal_provider.py`, then times `Dispatcher.run_once`:
claim, render one request per 1000, send, match the 1000 ids in the answer, and
group-commit every message's attempt, status change and provider id, until all N are
`sent` in the database. Target: >= 20 000 messages/s on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import (
    RunningProvider,
    add_dispatch_options,
    batch_connector,
    count_by_status,
    database_url,
    dispatch_setup,
    migrated,
    new_secret_box,
    print_table,
    queue_messages,
    running_provider,
    save,
    workdir,
)
from smsrelay.dispatch.transport import outbound_transport
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.settings import HTTP_CLIENTS, Settings

CONNECTOR = "batched"


async def dispatch(
    url: str, provider_url: str, count: int, batch: int, http_client: str = "builtin"
) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for the dispatcher to take `count` messages to sent
    through the `http_client` transport (`SMSRELAY_HTTP_CLIENT`)."""
    db = await migrated(url)
    box, _ = new_secret_box()
    try:
        stored = await save(db, box, batch_connector(CONNECTOR, provider_url, batch))
        await queue_messages(db, stored.id, count)
        # Claims as large as a few requests, so rendering and sending overlap the writes.
        settings = Settings(database_url=url, allow_hosts=("127.0.0.1",), claim_batch=4 * batch)
        transport = outbound_transport(http_client, allow_hosts=settings.allow_hosts)
        dispatcher = Dispatcher(db, box, transport, settings)
        try:
            started, cpu = time.perf_counter(), time.process_time()
            handled = await dispatcher.run_once()
            elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        finally:
            await transport.aclose()
        sent = (await count_by_status(db)).get("sent", 0)
        if handled != count or sent != count:
            raise SystemExit(f"dispatched {handled}, sent {sent}, expected {count}")
        return elapsed, used
    finally:
        await db.close()


async def run(kinds: list[str], count: int, batch: int, repeat: int, http_client: str) -> None:
    rows: list[list[object]] = []
    with running_provider() as provider:
        for kind in kinds:
            for run_number in range(1, repeat + 1):
                rows.append(await one_run(provider, kind, count, batch, run_number, http_client))
    print_table(
        "dispatch, batches in one request (target: >= 20,000 messages/s on SQLite)",
        [
            "database",
            "client",
            "run",
            "messages",
            "batch",
            "requests",
            "messages/s",
            "CPU µs/message",
        ],
        rows,
    )


async def one_run(
    provider: RunningProvider,
    kind: str,
    count: int,
    batch: int,
    run_number: int,
    http_client: str,
) -> list[object]:
    """One row: a fresh database (and queue) per run."""
    with workdir() as tmp, database_url(kind, tmp) as url:
        elapsed, cpu = await dispatch(url, provider.base_url, count, batch, http_client)
        stats = await provider.stats()
        await provider.reset()
        if stats[CONNECTOR]["messages"] != count:
            raise SystemExit(f"the provider got {stats[CONNECTOR]['messages']} messages")
        return [
            kind,
            http_client,
            run_number,
            count,
            batch,
            stats[CONNECTOR]["requests"],
            count / elapsed,
            f"{cpu / count * 1e6:.1f}",
        ]


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--http-client",
        choices=HTTP_CLIENTS,
        default="builtin",
        help="the transport (SMSRELAY_HTTP_CLIENT)",
    )
    add_dispatch_options(parser)
    options = parser.parse_args()
    kinds = dispatch_setup(options)
    asyncio.run(
        run(kinds, options.count, options.batch, max(1, options.repeat), options.http_client)
    )


if __name__ == "__main__":
    main()
