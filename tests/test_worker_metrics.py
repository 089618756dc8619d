"""`smsrelay worker` serves its own metrics on SMSRELAY_METRICS_PORT (it has no web server)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from postgres import free_port
from smsrelay.connectors.definition import load_definition
from smsrelay.sandbox.testing import running_sandbox
from smsrelay.settings import Settings
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import open_database
from smsrelay.store.messages import NewMessage, insert_messages, new_message_id
from smsrelay.store.secret_box import load_secret_box
from smsrelay.store.timestamps import utc_now

MESSAGES = 3


def worker_env(database_url: str, tmp_path: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SMSRELAY_DATABASE_URL": database_url,
        "SMSRELAY_SECRET_KEY_FILE": str(tmp_path / "key"),
        "SMSRELAY_ALLOW_HOSTS": "127.0.0.1",
        "SMSRELAY_LOG_LEVEL": "warning",
        "SMSRELAY_METRICS_PORT": str(port),
    }


async def sent_counts(url: str) -> dict[tuple[str, str], float]:
    """(result, outcome) samples of the sandbox connector, read from the worker's page."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("connector") == "sandbox" and sample.name.endswith("_total"):
                key = sample.labels.get("result") or sample.labels.get("outcome", "")
                found[(sample.name, key)] = sample.value
    return found


async def test_a_worker_serves_what_it_sent_on_its_metrics_port(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}"
    async with running_sandbox() as sbx:
        settings = Settings(database_url=database_url, secret_key_file=str(tmp_path / "key"))
        db = open_database(database_url)
        await db.migrate()
        definition = load_definition(sbx.connector_yaml())
        stored = await save_connector(
            db, load_secret_box(settings), definition.model_copy(update={"delivery": None})
        )
        now = utc_now()
        await insert_messages(
            db,
            [
                NewMessage(
                    id=new_message_id(), connector_id=stored.id, to=to, created_at=now, body="hi"
                )
                for to in ("+15005550006",) * MESSAGES
            ],
        )
        await db.close()
        port = free_port()
        worker = subprocess.Popen(
            [sys.executable, "-m", "smsrelay", "worker"],
            env=worker_env(database_url, tmp_path, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            async with asyncio.timeout(30):
                while True:
                    try:
                        counts = await sent_counts(url)
                    except httpx.TransportError:
                        counts = {}  # not listening yet
                    if counts.get(("smsrelay_message_attempts_total", "sent")) == MESSAGES:
                        break
                    await asyncio.sleep(0.1)
            assert counts[("smsrelay_provider_requests_total", "2xx")] == MESSAGES
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        assert f"metrics on http://127.0.0.1:{port}/metrics" in output.decode()


def test_a_worker_whose_metrics_port_is_taken_says_so_and_stops(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "smsrelay", "worker"],
            env=worker_env(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"SMSRELAY_METRICS_PORT: cannot serve metrics on 127.0.0.1:{port}" in done.stderr
