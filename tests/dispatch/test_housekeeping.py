"""The housekeeping loop: retention from the settings, a pass at start, stops when asked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from smsrelay.dispatch.housekeeping import Housekeeper
from smsrelay.settings import Settings
from smsrelay.store.api_keys import create_api_key
from smsrelay.store.database import Database
from smsrelay.store.tables import idempotency_keys

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


async def _key_ages(db: Database, hours: list[float]) -> None:
    key, _ = await create_api_key(db, "k", now=NOW)
    async with db.transaction() as conn:
        await conn.execute(
            insert(idempotency_keys),
            [
                {
                    "api_key_id": key.id,
                    "key": f"{age}h",
                    "request_hash": "h",
                    "status_code": 202,
                    "response": None,
                    "created_at": NOW - timedelta(hours=age),
                }
                for age in hours
            ],
        )


async def _left(db: Database) -> list[str]:
    async with db.connect() as conn:
        return sorted((await conn.execute(select(idempotency_keys.c.key))).scalars())


async def test_keys_are_kept_for_the_configured_hours(database: Database) -> None:
    await _key_ages(database, [30, 20, 2])
    keeper = Housekeeper(database, Settings(idempotency_key_hours=24), clock=lambda: NOW)
    pruned = await keeper.run_once()
    assert pruned.idempotency_keys == 1
    assert await _left(database) == ["20h", "2h"]
    shorter = Housekeeper(database, Settings(idempotency_key_hours=6), clock=lambda: NOW)
    assert (await shorter.run_once()).idempotency_keys == 1
    assert await _left(database) == ["2h"]


async def test_the_loop_prunes_at_start_and_ends_when_stopped(database: Database) -> None:
    await _key_ages(database, [48])
    settings = Settings(housekeeping_interval_seconds=3600)
    keeper = Housekeeper(database, settings, clock=lambda: NOW)
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))
    for _ in range(200):
        if not await _left(database):
            break
        await asyncio.sleep(0.01)
    assert await _left(database) == []
    stop.set()
    await asyncio.wait_for(task, timeout=5)  # does not sit out the hour
