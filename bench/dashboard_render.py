"""How long each dashboard page takes to render over a SQLite database of 100 000 messages.

Run `python bench/dashboard_render.py [--messages N] [--keep PATH]`; prints, per page, the
median and worst of several requests in milliseconds (after one warm-up request), against
`smsrelay serve` in a child process on 127.0.0.1 (no dispatcher, so nothing is sent). The
budget is 300 ms.

The database is filled with Core executemany: messages spread over the last 30 days across
three connectors, four senders and twenty campaigns (with their campaign rows), with
realistic statuses and failure reasons, three history events per message, and
delivery-report callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select, text

from common import free_port, running_server, wait_until_up
from smsrelay.connectors.definition import load_definition
from smsrelay.settings import Settings
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database, open_database
from smsrelay.store.delivery_reports import NewCallback, insert_callbacks
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import load_secret_box
from smsrelay.store.senders import create_sender
from smsrelay.store.tables import campaigns, message_events, messages, provider_ids
from smsrelay.store.users import create_user

BUDGET_MS = 300.0
# Indexes proposed for `store/tables.py` (not in the schema yet): --proposed-indexes adds
# them to the benchmark database to show what they change.
PROPOSED_INDEXES = (
    # Every analytics figure read from the index alone, one day's range at a time.
    "CREATE INDEX IF NOT EXISTS ix_messages_created_at_status ON messages "
    "(created_at, status, connector_id, sender_name, campaign_id, segments)",
    # The message log filtered by status, newest first, without sorting.
    "CREATE INDEX IF NOT EXISTS ix_messages_status_id ON messages (status, id)",
)
REPEATS = 7
PASSWORD = "benchmark password"
CONNECTOR = """
name: {name}
request:
  url: https://sms.{name}.example/send
  headers: {{Authorization: "Bearer {{{{secret.key}}}}"}}
  body: {{json: {{to: "{{{{to}}}}", text: "{{{{body}}}}", ref: "{{{{message_id}}}}"}}}}
response: {{message_id: $.id}}
delivery: {{message_id: $.id, status: $.status, reason: $.reason, delivered: [delivered],
  failed: [undelivered]}}
secrets: {{key: k3y}}
"""
STATUSES = (
    ("delivered", 80),
    ("undelivered", 8),
    ("failed", 5),
    ("sent", 3),
    ("unconfirmed", 2),
    ("queued", 1),
    ("canceled", 1),
)
REASONS = {
    "undelivered": ["absent_subscriber", "blacklisted", "network error", "expired"],
    "failed": ["invalid destination", "retries_exhausted: HTTP 500", "insufficient balance"],
    "unconfirmed": ["no final delivery report"],
}


def _rows(count: int, connector_ids: list[int], now: datetime) -> tuple[list[Any], ...]:
    rng = random.Random(7)
    statuses = [s for s, weight in STATUSES for _ in range(weight)]
    senders = ["otp", "alerts", "promo", "news"]
    start = now - timedelta(days=30)
    span = (now - start).total_seconds()
    offsets = sorted(rng.random() * span for _ in range(count))
    message_rows, event_rows, id_rows = [], [], []
    for index, offset in enumerate(offsets):
        created = start + timedelta(seconds=offset)
        # Ids sort by creation time, as new_message_id's do.
        message_id = new_message_id()[:10] + f"{index:016d}"
        status = rng.choice(statuses)
        connector_id = connector_ids[index % len(connector_ids)]
        reason = rng.choice(REASONS[status]) if status in REASONS else None
        attempted = status not in ("queued", "canceled")
        message_rows.append(
            {
                "id": message_id,
                "connector_id": connector_id,
                "sender_name": senders[index % len(senders)],
                "sender_id": "SMSRLY",
                "to": f"+1500555{rng.randrange(20000):04d}"[:12],
                "body": f"Your code is {rng.randrange(10**6):06d}",
                "campaign_id": f"campaign-{index % 20}" if index % 2 else None,
                "status": status,
                "attempts": 1 if attempted else 0,
                "segments": 1,
                "encoding": "gsm7",
                "failure_reason": reason,
                "created_at": created,
                "updated_at": created + timedelta(seconds=3),
                "sent_at": created + timedelta(seconds=1) if attempted else None,
                "final_at": created + timedelta(seconds=3) if status != "sent" else None,
            }
        )
        if attempted:
            detail = {
                "attempt": 1,
                "outcome": "failed" if status == "failed" else "sent",
                "request": {"method": "POST", "url": "https://sms.example/send", "headers": []},
                "response": {"status": 200, "headers": {}, "body": '{"id": "p1"}'},
                "elapsed_ms": 42.0,
            }
            event_rows.append(
                {
                    "message_id": message_id,
                    "at": created + timedelta(seconds=1),
                    "kind": "attempt",
                    "status": "sent",
                    "detail": detail,
                }
            )
            event_rows.append(
                {
                    "message_id": message_id,
                    "at": created + timedelta(seconds=1),
                    "kind": "status",
                    "status": "sent" if status != "failed" else "failed",
                    "detail": {"from": "sending"},
                }
            )
            if status not in ("sent", "failed"):
                event_rows.append(
                    {
                        "message_id": message_id,
                        "at": created + timedelta(seconds=3),
                        "kind": "status",
                        "status": status,
                        "detail": {"from": "sent", "reason": reason},
                    }
                )
            id_rows.append(
                {
                    "connector_id": connector_id,
                    "provider_id": f"p-{index}",
                    "message_id": message_id,
                    "recipient": None,
                }
            )
    return message_rows, event_rows, id_rows


CAMPAIGN_STATUSES = ("completed", "completed", "running", "paused", "canceled")


def _campaign_rows(message_rows: list[Any], connector_ids: list[int], now: datetime) -> list[Any]:
    """One row per campaign the messages name, its counters matching its messages."""
    per_campaign: dict[str, int] = {}
    first_seen: dict[str, datetime] = {}
    for row in message_rows:
        campaign_id = row["campaign_id"]
        if campaign_id is not None:
            per_campaign[campaign_id] = per_campaign.get(campaign_id, 0) + 1
            first_seen.setdefault(campaign_id, row["created_at"])
    rows = []
    for index, (campaign_id, total) in enumerate(sorted(per_campaign.items())):
        status = CAMPAIGN_STATUSES[index % len(CAMPAIGN_STATUSES)]
        created = first_seen[campaign_id] - timedelta(minutes=5)
        rows.append(
            {
                "id": campaign_id,
                "name": f"Campaign {index}",
                "status": status,
                "sender_name": "promo" if index % 2 else "news",
                "connector_id": connector_ids[1],
                "promotional": True,
                "body": "Hi {{params.first_name}}, news from {{params.city}}",
                "params": {"brand": "Acme"},
                "audience_source": "csv",
                "audience_columns": ["phone", "first_name", "city"],
                "phone_column": "phone",
                "throttle_per_minute": 600,
                "quiet_hours": {"start": "21:00", "end": "09:00"},
                "rows_total": total + 12,
                "rows_read": total + 12,
                "rows_valid": total + 3,
                "rows_invalid": 9,
                "invalid_rows": [{"row": 7 + n, "reason": "not a phone number"} for n in range(9)],
                "duplicates": 2,
                "suppressed": 1,
                "queued": total,
                "parts_total": 1,
                "next_part": 1,
                "expanded": True,
                "schedule_anchor": created,
                "last_slot_at": now,
                "created_at": created,
                "updated_at": now,
                "paused_at": now if status == "paused" else None,
                "finished_at": now if status in ("completed", "canceled") else None,
            }
        )
    return rows


async def fill(db: Database, settings: Settings, count: int) -> str:
    """Fill the database; returns a message id to open."""
    box = load_secret_box(settings)
    connector_ids = []
    for name in ("acme", "globex", "initech"):
        stored = await save_connector(db, box, load_definition(CONNECTOR.format(name=name)))
        connector_ids.append(stored.id)
    for name, kind in (("otp", "transactional"), ("alerts", "transactional")):
        await create_sender(db, name=name, connector="acme", sender_id="SMSRLY", type=kind)
    for name in ("promo", "news"):
        await create_sender(db, name=name, connector="globex", sender_id="NEWS", type="promotional")
    await create_user(db, "bench", PASSWORD)
    now = datetime.now(UTC)
    message_rows, event_rows, id_rows = _rows(count, connector_ids, now)
    async with db.transaction() as conn:
        for table, rows in ((messages, message_rows), (message_events, event_rows)):
            for start in range(0, len(rows), 5000):
                await conn.execute(insert(table), rows[start : start + 5000])
        for start in range(0, len(id_rows), 5000):
            await conn.execute(insert(provider_ids), id_rows[start : start + 5000])
        campaign_rows = _campaign_rows(message_rows, connector_ids, now)
        if campaign_rows:
            await conn.execute(insert(campaigns), campaign_rows)
    callbacks = [
        NewCallback(
            connector_id=connector_ids[0],
            received_at=now - timedelta(seconds=n),
            method="POST",
            url="http://127.0.0.1/dlr/x",
            headers={"content-type": "application/json"},
            body=b'{"id": "p-%d", "status": "delivered", "reason": null}' % n,
            content_type="application/json",
        )
        for n in range(500)
    ]
    await insert_callbacks(db, callbacks)
    return str(message_rows[len(message_rows) // 2]["id"])


def _reference_loop_ms() -> float:
    """A fixed CPU task, to compare runs on machines (or loads) of different speed."""
    started = time.perf_counter()
    sum(range(3_000_000))
    return (time.perf_counter() - started) * 1000


async def _middle_message(db: Database) -> str:
    async with db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
        found = await conn.execute(
            select(messages.c.id).order_by(messages.c.id).offset(count // 2).limit(1)
        )
        return str(found.scalar_one())


async def _signed_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = await client.post(
        "/ui/login",
        data={"csrf_token": token.group(1), "name": "bench", "password": PASSWORD, "next": "/ui/"},
    )
    assert response.status_code == 303, response.text


async def measure(database_url: str, workdir: Path, message_id: str) -> list[Any]:
    """Serve the dashboard and time every page; returns (path, median, worst, bytes).

    The server is `smsrelay serve` in a child process, as in production, so the client's
    own work (this process) is not counted in the page's time; each time runs from the
    request to the last byte of the page.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    results = []
    with running_server(
        database_url,
        port,
        workdir,
        secret_key_file=str(workdir / "bench.key"),
        sandbox="false",
        dispatcher="false",
    ):
        await wait_until_up(base_url)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            await _signed_in(client)
            first = await client.get("/ui/messages")
            cursor = re.search(r'href="/ui/messages\?cursor=([0-9A-Z]{26})"', first.text)
            pages = [
                "/ui/",
                "/ui/connectors",
                "/ui/connectors/acme/edit",
                "/ui/connectors/acme/delivery",
                "/ui/messages",
                f"/ui/messages?cursor={cursor.group(1) if cursor else ''}",
                "/ui/messages?status=undelivered",
                "/ui/messages?status=queued",
                "/ui/messages?connector=initech",
                "/ui/messages?campaign=campaign-7",
                "/ui/messages?sender=news&status=failed",
                "/ui/messages?q=%2B15005550042",
                f"/ui/messages/{message_id}",
                "/ui/analytics",
                "/ui/analytics?by=sender&days=90",
                "/ui/analytics?by=campaign&key=campaign-7",
                "/ui/analytics?by=connector&key=acme&days=7",
                "/ui/senders",
                "/ui/webhooks",
                "/ui/api-keys",
                "/ui/campaigns",
                "/ui/campaigns/campaign-7",
                "/ui/suppressions",
            ]
            for path in pages:
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code)
                times = []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                results.append((path, statistics.median(times), max(times), len(response.content)))
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the database (and its key) in this folder")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the database kept by an earlier --keep"
    )
    parser.add_argument(
        "--proposed-indexes", action="store_true", help="add the proposed indexes first"
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="smsrelay-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.db"
    database_url = f"sqlite+aiosqlite:///{path}"
    settings = Settings(database_url=database_url, secret_key_file=str(workdir / "bench.key"))
    db = open_database(database_url)
    started = time.perf_counter()
    try:
        if args.reuse and path.exists():
            await db.migrate()
            message_id = await _middle_message(db)
        else:
            path.unlink(missing_ok=True)
            await db.migrate()
            message_id = await fill(db, settings, args.messages)
            took = time.perf_counter() - started
            print(f"filled {args.messages:,} messages in {took:.1f} s ({path})")
        if args.proposed_indexes:
            async with db.transaction() as conn:
                for statement in PROPOSED_INDEXES:
                    await conn.execute(text(statement))
            print("with the proposed indexes:", *PROPOSED_INDEXES, sep="\n  ")
    finally:
        await db.close()
    print(f"CPU reference: {_reference_loop_ms():.0f} ms for a 3M-step Python loop")
    results = await measure(database_url, workdir, message_id)
    width = max(len(path) for path, *_ in results)
    print(f"{'page':<{width}}  median ms  worst ms     bytes")
    over = 0
    for page, median, worst, size in results:
        flag = "  OVER BUDGET" if worst > BUDGET_MS else ""
        over += bool(flag)
        print(f"{page:<{width}}  {median:9.1f}  {worst:8.1f}  {size:8,}{flag}")
    print(
        f"{len(results) - over} of {len(results)} pages within {BUDGET_MS:.0f} ms (worst of {REPEATS})"
    )


if __name__ == "__main__":
    asyncio.run(main())
