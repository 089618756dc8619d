"""Outbox helpers for the store tests: queue messages, claim them, read their statuses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from store_samples import NOW

from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.messages import (
    ClaimedMessage,
    NewMessage,
    claim_due_messages,
    insert_messages,
    new_message_id,
)
from smsrelay.store.tables import messages

LEASE = 30.0


async def queue(
    database: Database, connector: StoredConnector, count: int = 1, **fields: Any
) -> list[str]:
    batch = [
        NewMessage(
            id=new_message_id(),
            connector_id=connector.id,
            to=f"+49151{i:08d}",
            body=f"message {i}",
            created_at=NOW,
            **fields,
        )
        for i in range(count)
    ]
    await insert_messages(database, batch)
    return [m.id for m in batch]


async def claim(
    database: Database,
    connector: StoredConnector,
    *,
    worker: str = "w1",
    limit: int = 100,
    at: timedelta = timedelta(0),
) -> list[ClaimedMessage]:
    return await claim_due_messages(
        database,
        connector_id=connector.id,
        worker_id=worker,
        limit=limit,
        lease_seconds=LEASE,
        now=NOW + at,
    )


async def statuses(database: Database, ids: Sequence[str]) -> list[str]:
    async with database.connect() as conn:
        rows = await conn.execute(select(messages.c.id, messages.c.status))
        found = {row.id: row.status for row in rows}
    return [found[i] for i in ids]
