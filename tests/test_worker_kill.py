"""A worker killed with SIGKILL mid-flight loses nothing: after a restart every message is sent.

The at-least-once bound (README): a message whose request was in flight when its worker died
may be sent once more after its lease expires; no message is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from smsrelay.connectors.definition import load_definition
from smsrelay.sandbox import ChaosSettings, SandboxSettings
from smsrelay.sandbox.testing import running_sandbox
from smsrelay.settings import Settings
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import open_database
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import NewMessage, insert_messages, list_messages, new_message_id
from smsrelay.store.secret_box import load_secret_box
from smsrelay.store.timestamps import utc_now

MESSAGES = 60


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "smsrelay", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def statuses(database_url: str) -> dict[str, str]:
    db = open_database(database_url)
    try:
        found: dict[str, str] = {}
        cursor = None
        while True:
            page, cursor = await list_messages(db, cursor=cursor, limit=1000)
            found.update({m.id: m.status.value for m in page})
            if cursor is None:
                return found
    finally:
        await db.close()


async def test_sigkill_of_a_worker_loses_no_message(database_url: str, tmp_path: Path) -> None:
    slow = SandboxSettings(
        dlr_delay_seconds=0, chaos=ChaosSettings(slow_rate=1.0), slow_seconds=0.5
    )
    async with running_sandbox(slow) as sbx:
        settings = Settings(database_url=database_url, secret_key_file=str(tmp_path / "key"))
        db = open_database(database_url)
        box = load_secret_box(settings)
        definition = load_definition(sbx.connector_yaml())
        stored = await save_connector(db, box, definition.model_copy(update={"delivery": None}))
        now = utc_now()
        ids = [new_message_id() for _ in range(MESSAGES)]
        await insert_messages(
            db,
            [
                NewMessage(
                    id=i,
                    connector_id=stored.id,
                    to=f"+1500555{n:04d}",
                    created_at=now,
                    body=f"m{n}",
                )
                for n, i in enumerate(ids, 2000)
            ],
        )
        await db.close()
        env = {
            **os.environ,
            "SMSRELAY_DATABASE_URL": database_url,
            "SMSRELAY_SECRET_KEY_FILE": str(tmp_path / "key"),
            "SMSRELAY_ALLOW_HOSTS": "127.0.0.1",
            "SMSRELAY_LEASE_SECONDS": "3",
            "SMSRELAY_CLAIM_BATCH": "20",
            "SMSRELAY_LOG_LEVEL": "warning",
        }
        log = tmp_path / "worker.log"
        first = start_worker(env, log)
        try:
            await sbx.sandbox.wait_until(lambda s: len(s.messages(limit=500)) >= 10, timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        in_flight = [
            s for s in (await statuses(database_url)).values() if s == MessageStatus.SENDING
        ]
        assert in_flight, "the kill should catch messages in flight"
        second = start_worker(env, log)
        try:
            async with asyncio.timeout(60):
                while True:
                    current = await statuses(database_url)
                    if all(s == MessageStatus.SENT for s in current.values()):
                        break
                    await asyncio.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        received = [m.client_ref for m in sbx.sandbox.messages(limit=500)]
        assert set(received) == set(ids), log.read_text()
        duplicates = len(received) - len(set(received))
        # Only requests in flight at the kill may go out twice.
        assert duplicates <= len(in_flight)
