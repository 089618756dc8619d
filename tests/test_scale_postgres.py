"""Several `smsrelay worker` processes on one PostgreSQL database share the work exactly.

One connector is rate limited: whichever worker holds its lease sends for it, so its rate
holds across workers (checked over sliding windows of the arrivals at the provider). The
worker holding that lease is killed with SIGKILL mid-run: another takes the connector
over, and every message still reaches the provider (count-based; duplicates only for
requests that were in flight at the kill, the README's at-least-once bound).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from smsrelay.connectors.definition import RateLimit, load_definition
from smsrelay.sandbox import SandboxSettings
from smsrelay.sandbox.testing import running_sandbox
from smsrelay.settings import Settings
from smsrelay.store.connector_leases import lease_holders
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database, open_database
from smsrelay.store.messages import NewMessage, insert_messages, new_message_id
from smsrelay.store.notifications import OutboxListener
from smsrelay.store.secret_box import load_secret_box
from smsrelay.store.tables import messages
from smsrelay.store.timestamps import utc_now

# As tests/conftest.py reads it: by default every database is tested.
_SELECTED = os.environ.get("SMSRELAY_TEST_DATABASES", "sqlite,postgresql").lower()
pytestmark = pytest.mark.skipif(
    "postgresql" not in _SELECTED, reason="SMSRELAY_TEST_DATABASES leaves PostgreSQL out"
)

WORKERS = 3
RATE = 25.0  # messages per second on the limited connector
BURST = 5
LIMITED = 250  # ten seconds' worth
UNLIMITED = 300
WINDOW_SECONDS = 4.0
# With 4 s this failed twice in full runs on a loaded machine (35 duplicates where only the
# killed worker's 10 in flight may repeat). A live worker must record what it sent before
# its lease runs out, or another may claim and send it again; 10 s leaves it more room and
# the test takes as long (~21 s).
LEASE_SECONDS = "10"


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "smsrelay", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def queue(db: Database, connector_id: int, count: int, first_number: int) -> list[str]:
    now = utc_now()
    ids = [new_message_id() for _ in range(count)]
    await insert_messages(
        db,
        [
            NewMessage(
                id=message_id,
                connector_id=connector_id,
                to=f"+1500555{n:04d}",
                created_at=now,
                body=f"m{n}",
            )
            for n, message_id in enumerate(ids, first_number)
        ],
    )
    return ids


async def sent_count(db: Database) -> int:
    async with db.connect() as conn:
        query = select(func.count()).where(messages.c.status == "sent")
        return int((await conn.execute(query)).scalar_one())


async def in_flight_of(db: Database, owner: str) -> int:
    async with db.connect() as conn:
        query = (
            select(func.count())
            .where(messages.c.status == "sending")
            .where(messages.c.lease_owner == owner)
        )
        return int((await conn.execute(query)).scalar_one())


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of arrivals inside any window of `window` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_workers_share_a_rate_limit_and_a_killed_one_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with running_sandbox(SandboxSettings(dlr_delay_seconds=0)) as sbx:
        settings = Settings(database_url=database_url, secret_key_file=str(tmp_path / "key"))
        db = open_database(database_url)
        box = load_secret_box(settings)
        sandbox = load_definition(sbx.connector_yaml()).model_copy(update={"delivery": None})
        limited = await save_connector(
            db,
            box,
            sandbox.model_copy(
                update={"name": "limited", "rate_limit": RateLimit(per_second=RATE, burst=BURST)}
            ),
        )
        unlimited = await save_connector(db, box, sandbox.model_copy(update={"name": "open"}))
        limited_ids = await queue(db, limited.id, LIMITED, 1000)
        unlimited_ids = await queue(db, unlimited.id, UNLIMITED, 3000)
        env = {
            **os.environ,
            "SMSRELAY_DATABASE_URL": database_url,
            "SMSRELAY_SECRET_KEY_FILE": str(tmp_path / "key"),
            "SMSRELAY_ALLOW_HOSTS": "127.0.0.1",
            "SMSRELAY_LEASE_SECONDS": LEASE_SECONDS,
            "SMSRELAY_CLAIM_BATCH": "50",
            "SMSRELAY_POLL_INTERVAL_SECONDS": "0.1",
            "SMSRELAY_LOG_LEVEL": "warning",
        }
        log = tmp_path / "workers.log"
        workers = {}
        for _ in range(WORKERS):
            worker = start_worker(env, log)
            workers[worker.pid] = worker
        try:
            limited_refs = set(limited_ids)

            def limited_received() -> int:
                return sum(
                    1 for m in sbx.sandbox.messages(limit=10_000) if m.client_ref in limited_refs
                )

            await sbx.sandbox.wait_until(lambda s: limited_received() >= LIMITED // 3, timeout=30)
            holder, _expires = (await lease_holders(db))[limited.id]
            assert holder is not None, "a worker holds the limited connector's lease"
            victim = workers.pop(int(holder.split(":")[-2]))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            in_flight = await in_flight_of(db, holder)

            async with asyncio.timeout(60):
                while await sent_count(db) < LIMITED + UNLIMITED:
                    await asyncio.sleep(0.2)
        finally:
            for worker in workers.values():
                worker.send_signal(signal.SIGTERM)
            for worker in workers.values():
                worker.wait(timeout=30)
            await db.close()

        received = sbx.sandbox.messages(limit=10_000)
        refs = [m.client_ref for m in received]
        assert set(refs) == set(limited_ids) | set(unlimited_ids), log.read_text()
        assert len(refs) - len(set(refs)) <= in_flight
        arrivals = [m.received_at.timestamp() for m in received if m.client_ref in limited_refs]
        # At most the burst plus the rate over any window (5% for the timing of requests).
        allowed = BURST + RATE * WINDOW_SECONDS * 1.05
        assert most_in_any_window(arrivals, WINDOW_SECONDS) <= allowed


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_queueing_messages_notifies_listening_workers(database: Database) -> None:
    woken = asyncio.Event()
    listener = OutboxListener(database, woken.set)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        async with asyncio.timeout(10):
            await listener.listening.wait()
        woken.clear()  # the listener looks once when it starts listening
        await queue(database, 1, 1, 1000)
        async with asyncio.timeout(10):
            await woken.wait()
    finally:
        stop.set()
        await task
