"""Idempotency keys: a repeated request with the same key gets the first answer again.

The key is claimed in the same transaction as the work it protects, so either both are
stored or neither; a request that finds the key taken rolls back and replays the stored
answer, or is refused if its content differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import Database, insert_ignoring_duplicates
from smsrelay.store.errors import IdempotencyConflict
from smsrelay.store.tables import idempotency_keys
from smsrelay.store.timestamps import utc_now


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The answer to remember for (api_key_id, key); `request_hash` identifies the request."""

    api_key_id: int
    key: str
    request_hash: str
    status_code: int
    response: Any
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IdempotentReplay:
    """The answer stored for a key that was used before with the same request."""

    status_code: int
    response: Any


async def claim_idempotency_key(
    db: Database, conn: AsyncConnection, record: IdempotencyRecord
) -> bool:
    """Store the record in the caller's transaction; False if the key is already taken.

    On PostgreSQL a concurrent claim of the same key waits for the first transaction, so
    exactly one of them wins.
    """
    result = await conn.execute(
        insert_ignoring_duplicates(db, idempotency_keys).values(
            api_key_id=record.api_key_id,
            key=record.key,
            request_hash=record.request_hash,
            status_code=record.status_code,
            response=record.response,
            created_at=record.created_at or utc_now(),
        )
    )
    return bool(result.rowcount)


async def find_idempotent_replay(
    db: Database, api_key_id: int, key: str, request_hash: str
) -> IdempotentReplay | None:
    """The stored answer for this key, None if unused; `IdempotencyConflict` if the request differs."""
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(
                    idempotency_keys.c.request_hash,
                    idempotency_keys.c.status_code,
                    idempotency_keys.c.response,
                )
                .where(idempotency_keys.c.api_key_id == api_key_id)
                .where(idempotency_keys.c.key == key)
            )
        ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyConflict(key)
    return IdempotentReplay(status_code=row.status_code, response=row.response)


async def prune_idempotency_keys(db: Database, older_than: datetime) -> int:
    """Forget keys stored before `older_than`; returns how many."""
    async with db.transaction() as conn:
        result = await conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
        )
    return int(result.rowcount)
