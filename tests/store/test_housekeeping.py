"""Pruning idempotency keys and the webhook delivery log (store/housekeeping.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select
from store_samples import NOW

from smsrelay.store.api_keys import create_api_key
from smsrelay.store.database import Database
from smsrelay.store.housekeeping import (
    prune_expired,
    prune_idempotency_keys_before,
    prune_webhook_log,
)
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import idempotency_keys, webhook_attempts, webhook_deliveries
from smsrelay.store.webhooks import create_webhook

DAY = timedelta(days=1)


async def _count(db: Database, column: ColumnElement[Any]) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count(column)))).scalar_one())


async def _keys(db: Database, ages_in_hours: list[float]) -> None:
    key, _ = await create_api_key(db, "k", now=NOW)
    async with db.transaction() as conn:
        await conn.execute(
            insert(idempotency_keys),
            [
                {
                    "api_key_id": key.id,
                    "key": f"key-{n}",
                    "request_hash": "h",
                    "status_code": 202,
                    "response": {"n": n},
                    "created_at": NOW - timedelta(hours=age),
                }
                for n, age in enumerate(ages_in_hours)
            ],
        )


async def test_idempotency_keys_older_than_the_cutoff_go_in_chunks_and_newer_ones_stay(
    database: Database,
) -> None:
    await _keys(database, [100, 90, 80, 70, 60, 50, 49, 1, 0.5])
    removed = await prune_idempotency_keys_before(database, NOW - timedelta(hours=24), chunk=2)
    assert removed == 7
    async with database.connect() as conn:
        left = sorted((await conn.execute(select(idempotency_keys.c.key))).scalars())
    assert left == ["key-7", "key-8"]
    assert await prune_idempotency_keys_before(database, NOW - timedelta(hours=24)) == 0


async def _deliveries(db: Database, box: SecretBox, rows: list[tuple[str, float | None]]) -> None:
    """Deliveries as (state, finished days ago or None), each with two attempts."""
    hook = await create_webhook(
        db,
        box,
        url="https://hooks.example.com/in",
        events=["message.delivered"],
        format="smsrelay",
        scope="all",
        secret="s3cret",
        now=NOW - 30 * DAY,
    )
    async with db.transaction() as conn:
        for n, (state, finished) in enumerate(rows):
            delivery_id = (
                await conn.execute(
                    insert(webhook_deliveries)
                    .values(
                        webhook_id=hook.id,
                        event_id=n + 1,
                        uid=f"uid-{n}",
                        message_id=f"{n:026d}",
                        event={"n": n},
                        attempts=2,
                        state=state,
                        created_at=NOW - 20 * DAY,
                        finished_at=None if finished is None else NOW - finished * DAY,
                    )
                    .returning(webhook_deliveries.c.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(webhook_attempts),
                [
                    {"delivery_id": delivery_id, "at": NOW - 20 * DAY, "duration_ms": 5},
                    {"delivery_id": delivery_id, "at": NOW - 19 * DAY, "duration_ms": 5},
                ],
            )


async def test_finished_webhook_deliveries_go_with_their_attempts_and_pending_ones_stay(
    database: Database, box: SecretBox
) -> None:
    await _deliveries(
        database,
        box,
        [
            ("delivered", 10),  # old, finished: pruned
            ("failed", 9),  # old, finished: pruned
            ("skipped", 8),  # old, finished: pruned
            ("delivered", 2),  # recent: kept
            ("pending", None),  # still being sent, however old: kept
        ],
    )
    deliveries, attempts = await prune_webhook_log(database, NOW - 7 * DAY, chunk=2)
    assert (deliveries, attempts) == (3, 6)
    async with database.connect() as conn:
        left = sorted((await conn.execute(select(webhook_deliveries.c.uid))).scalars())
    assert left == ["uid-3", "uid-4"]
    assert await _count(database, webhook_attempts.c.id) == 4
    assert await prune_webhook_log(database, NOW - 7 * DAY) == (0, 0)


async def test_one_pass_prunes_both_and_says_how_many(database: Database, box: SecretBox) -> None:
    await _keys(database, [48, 1])
    await _deliveries(database, box, [("delivered", 30), ("delivered", 1)])
    pruned = await prune_expired(
        database,
        idempotency_before=NOW - DAY,
        webhook_log_before=NOW - 7 * DAY,
    )
    assert (pruned.idempotency_keys, pruned.webhook_deliveries, pruned.webhook_attempts) == (
        1,
        1,
        2,
    )
    assert pruned.total == 4
