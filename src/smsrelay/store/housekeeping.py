"""Pruning what is kept only for a while: idempotency keys and the webhook delivery log.

Both tables would otherwise grow with every request and every status change. Deletes run
in chunks of `chunk` rows, one short write transaction each, so a large backlog never
holds SQLite's write lock (or many PostgreSQL row locks) for long. Running the same prune
in several processes at once is harmless: a row is deleted once, the others find none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from smsrelay.store.database import Database
from smsrelay.store.tables import idempotency_keys, webhook_attempts, webhook_deliveries

# Webhook deliveries in these states are finished; `pending` ones are still being sent.
FINISHED_DELIVERY_STATES = ("delivered", "failed", "skipped")
DEFAULT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one housekeeping pass removed."""

    idempotency_keys: int = 0
    webhook_deliveries: int = 0
    webhook_attempts: int = 0

    @property
    def total(self) -> int:
        return self.idempotency_keys + self.webhook_deliveries + self.webhook_attempts


async def prune_idempotency_keys_before(
    db: Database, created_before: datetime, *, chunk: int = DEFAULT_CHUNK
) -> int:
    """Forget idempotency keys stored before `created_before`, oldest first; returns how many."""
    removed = 0
    while True:
        async with db.transaction() as conn:
            # The created_at of the chunk's last row bounds this chunk's delete.
            bound = (
                await conn.execute(
                    select(idempotency_keys.c.created_at)
                    .where(idempotency_keys.c.created_at < created_before)
                    .order_by(idempotency_keys.c.created_at)
                    .offset(chunk - 1)
                    .limit(1)
                )
            ).scalar_one_or_none()
            condition = (
                idempotency_keys.c.created_at <= bound
                if bound is not None
                else idempotency_keys.c.created_at < created_before
            )
            result = await conn.execute(delete(idempotency_keys).where(condition))
        removed += int(result.rowcount)
        if bound is None:
            return removed


async def prune_webhook_log(
    db: Database, finished_before: datetime, *, chunk: int = DEFAULT_CHUNK
) -> tuple[int, int]:
    """Forget webhook deliveries finished before `finished_before`, with their attempts.

    Pending deliveries are never touched, however old. Returns (deliveries, attempts).
    """
    deliveries = attempts = 0
    while True:
        async with db.transaction() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(webhook_deliveries.c.id)
                        .where(webhook_deliveries.c.state.in_(FINISHED_DELIVERY_STATES))
                        .where(webhook_deliveries.c.finished_at < finished_before)
                        .order_by(webhook_deliveries.c.id)
                        .limit(chunk)
                    )
                ).scalars()
            )
            if not ids:
                return deliveries, attempts
            gone = await conn.execute(
                delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids))
            )
            attempts += int(gone.rowcount)
            gone = await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(ids))
            )
            deliveries += int(gone.rowcount)
        if len(ids) < chunk:
            return deliveries, attempts


async def prune_expired(
    db: Database,
    *,
    idempotency_before: datetime,
    webhook_log_before: datetime,
    chunk: int = DEFAULT_CHUNK,
) -> Pruned:
    """One housekeeping pass over both tables."""
    keys = await prune_idempotency_keys_before(db, idempotency_before, chunk=chunk)
    deliveries, attempts = await prune_webhook_log(db, webhook_log_before, chunk=chunk)
    return Pruned(keys, deliveries, attempts)
