"""Dispatch, one message per request: the dispatcher against a bare aiohttp client, same run.

Run `python bench/dispatch_unbatched.py [--count N] [--concurrency C] [--database both]`.
For each database it queues N messages for one JSON connector (concurrency C) pointing at
`minimal_provider.py` (a process of its own), then times:

- **bare client**: C aiohttp coroutines POSTing N requests of the same size and headers to
  the same provider, reading each answer: the ceiling for one Python process;
- **dispatcher**: `Dispatcher.run_once` claiming, rendering, sending, parsing and
  group-committing all N until every message is `sent` in the database, through the
  default transport (smsrelay's own HTTP/1.1 client, `dispatch/http11.py`);
- **on aiohttp**: the same dispatcher with `SMSRELAY_HTTP_CLIENT=aiohttp`'s transport, the
  ratio it would have with aiohttp's client inside.

- **without the network**: the same dispatcher run once more, its transport answering in
  memory what the provider answers (`{"id": ...}`): everything the dispatcher does per
  message but the HTTP exchange.

The bare client runs before and after the dispatcher; the ratio is taken against the faster
of the two. Target: dispatcher >= 0.7 x bare client. Process CPU per message is printed for
both (the bare client's lower run): on a shared machine it is steadier than the rates.

All Python work of a process takes turns on one core, so the main thread's CPU per message
sets the rate. The last columns show how far that is from the target: at 0.7 the dispatcher's
main thread may spend bare/0.7 per message, so once the HTTP exchange has cost what it costs
the bare client, everything else must fit in bare x (1/0.7 - 1) ("budget"), against what the
dispatcher spends without the network ("spent").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time

from common import (
    add_dispatch_options,
    client_session,
    count_by_status,
    database_url,
    dispatch_setup,
    migrated,
    new_secret_box,
    print_table,
    queue_messages,
    running_provider,
    save,
    single_connector,
    workdir,
)
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.transport import InMemoryTransport, Transport, outbound_transport
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.settings import Settings
from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox

CONNECTOR = "unbatched"


def sample_body(n: int) -> bytes:
    """A request body of the same shape and size as the connector renders."""
    return json.dumps(
        {
            "source": "BENCH",
            "destination": f"+4915112{n:06d}",
            "text": f"Your code is {n:06d}. Do not share it.",
            "ref": "01J0000000000000000000000",
            "callback": "http://127.0.0.1:8000/dlr/abcdefghijklmnopqrstuvwxyz0123456789ABCD",
        }
    ).encode()


async def bare_client(url: str, count: int, concurrency: int) -> tuple[float, float]:
    """(wall, process CPU) seconds for C coroutines to POST `count` requests and read every
    answer."""
    headers = {"Authorization": "Bearer bench-secret-key", "Content-Type": "application/json"}
    bodies = [sample_body(n) for n in range(count)]
    next_index = iter(range(count))

    async with client_session(concurrency) as session:

        async def sender() -> None:
            for n in next_index:
                async with session.post(url, data=bodies[n], headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise SystemExit(f"the provider answered {answer.status}")

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu


def provider_answer() -> InMemoryTransport:
    """A transport answering in memory what `minimal_provider.py` answers a message."""
    answered = iter(range(1, 1 << 62))

    def answer(_request: HttpRequest) -> HttpResponse:
        body = b'{"id": "p%d"}' % next(answered)
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "keep-alive",
        }
        return HttpResponse(200, headers, body)

    return InMemoryTransport(answer)


async def queued(
    url: str, provider_url: str, count: int, concurrency: int
) -> tuple[Database, SecretBox]:
    """A migrated database with `count` messages queued for the benchmark's connector."""
    db = await migrated(url)
    box, _ = new_secret_box()
    try:
        stored = await save(
            db, box, single_connector(CONNECTOR, provider_url, concurrency=concurrency)
        )
        await queue_messages(db, stored.id, count)
    except BaseException:
        await db.close()
        raise
    return db, box


async def dispatcher_run(
    url: str,
    provider_url: str,
    count: int,
    concurrency: int,
    *,
    network: bool = True,
    lease_seconds: float | None = None,
    http_client: str = "builtin",
) -> tuple[float, float, float]:
    """(wall, process CPU, main-thread CPU) seconds for the dispatcher to take `count` queued
    messages to `sent` (the process CPU includes the database threads). Without `network`,
    the provider's answers come from memory. A longer lease than the default suits a run
    slowed down many times (under valgrind), which would otherwise leave messages whose
    lease runs out to the next worker."""
    db, box = await queued(url, provider_url, count, concurrency)
    try:
        settings = Settings(database_url=url, allow_hosts=("127.0.0.1",))
        if lease_seconds is not None:
            settings = dataclasses.replace(settings, lease_seconds=lease_seconds)
        transport: Transport = (
            outbound_transport(http_client, allow_hosts=settings.allow_hosts)
            if network
            else provider_answer()
        )
        dispatcher = Dispatcher(db, box, transport, settings)
        try:
            started, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
            handled = await dispatcher.run_once()
            elapsed = time.perf_counter() - started
            used, used_main = time.process_time() - cpu, time.thread_time() - main
        finally:
            await transport.aclose()
        sent = (await count_by_status(db)).get("sent", 0)
        if handled != count or sent != count:
            raise SystemExit(f"dispatched {handled}, sent {sent}, expected {count}")
        return elapsed, used, used_main
    finally:
        await db.close()


async def run(kinds: list[str], count: int, concurrency: int, repeat: int) -> None:
    rows: list[list[object]] = []
    with running_provider() as provider:
        for kind, run_number in ((k, n) for k in kinds for n in range(1, repeat + 1)):
            with workdir() as tmp, database_url(kind, tmp) as url:
                bare_url = f"{provider.base_url}/send/bare"
                before, before_cpu = await bare_client(bare_url, count, concurrency)
                dispatch, dispatch_cpu, _ = await dispatcher_run(
                    url, provider.base_url, count, concurrency
                )
                after, after_cpu = await bare_client(bare_url, count, concurrency)
            with workdir() as tmp, database_url(kind, tmp) as url:
                on_aiohttp, _, _ = await dispatcher_run(
                    url, provider.base_url, count, concurrency, http_client="aiohttp"
                )
            with workdir() as tmp, database_url(kind, tmp) as url:
                _, _, spent = await dispatcher_run(
                    url, provider.base_url, count, concurrency, network=False
                )
                stats = await provider.stats()
                if stats[CONNECTOR]["messages"] != 2 * count:
                    raise SystemExit(f"the provider got {stats[CONNECTOR]['messages']} messages")
                await provider.reset()
                bare = min(before, after)
                bare_cpu = min(before_cpu, after_cpu) / count * 1e6
                rows.append(
                    [
                        kind,
                        run_number,
                        count,
                        concurrency,
                        count / before,
                        count / after,
                        count / dispatch,
                        f"{bare / dispatch:.2f}",
                        count / on_aiohttp,
                        f"{bare / on_aiohttp:.2f}",
                        f"{bare_cpu:.0f}",
                        f"{dispatch_cpu / count * 1e6:.0f}",
                        f"{bare_cpu * (1 / 0.7 - 1):.0f}",
                        f"{spent / count * 1e6:.0f}",
                    ]
                )
    print_table(
        "dispatch, one message per request (target: ratio >= 0.70)",
        [
            "database",
            "run",
            "messages",
            "in flight",
            "bare/s (before)",
            "bare/s (after)",
            "dispatcher/s",
            "ratio",
            "on aiohttp/s",
            "ratio on aiohttp",
            "bare CPU µs/msg",
            "dispatcher CPU µs/msg",
            "budget µs/msg",
            "spent µs/msg",
        ],
        rows,
    )


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    add_dispatch_options(parser)
    options = parser.parse_args()
    kinds = dispatch_setup(options)
    asyncio.run(run(kinds, options.count, options.concurrency, max(1, options.repeat)))


if __name__ == "__main__":
    main()
