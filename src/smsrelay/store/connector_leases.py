"""Connector leases: one worker at a time sends for a rate-limited connector.

A connector's rate limit is a token bucket. Shared by many workers it would need a
database round trip per request; instead one worker holds a time-boxed lease on the
connector and spends the bucket alone, in memory, so the limit holds exactly however many
workers run. Leases are rows of `connector_leases`, taken and renewed in a transaction
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite).

Handing over keeps the bucket continuous: a worker letting go stores its bucket's tokens
and the time; the next holder refills from there. A worker that died stored nothing, so
its successor waits out the lease and starts from an empty bucket at the moment the lease
expired (the dead worker may have sent right up to it). Expiry is compared on each
worker's own clock, as message leases are: clocks must agree (NTP) to well under a lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update

from smsrelay.store.database import Database, insert_ignoring_duplicates
from smsrelay.store.tables import connector_leases

TakenFrom = Literal["renewed", "new", "released", "expired"]


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A lease held until `expires_at`, and the bucket to start from.

    `taken_from`: `renewed` (this worker held it already), `new` (never leased: a full
    bucket), `released` (its last holder left `tokens` at `tokens_at`) or `expired` (its
    holder vanished: an empty bucket at `tokens_at`, the old expiry). `previous_owner` is
    who held it before (this worker itself after a lapse).
    """

    connector_id: int
    expires_at: datetime
    taken_from: TakenFrom
    previous_owner: str | None = None
    tokens: float | None = None
    tokens_at: datetime | None = None


async def acquire_connector_lease(
    db: Database, connector_id: int, owner: str, *, now: datetime, seconds: float
) -> LeaseGrant | None:
    """Take or renew the lease on a connector until `now + seconds`; None if another holds it."""
    expires = now + timedelta(seconds=seconds)
    async with db.transaction() as conn:
        await conn.execute(
            insert_ignoring_duplicates(db, connector_leases).values(connector_id=connector_id)
        )
        query = select(connector_leases).where(connector_leases.c.connector_id == connector_id)
        if not db.is_sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).one()
        held = row.owner is not None and row.expires_at is not None and row.expires_at > now
        if held and row.owner != owner:
            return None
        await conn.execute(
            update(connector_leases)
            .where(connector_leases.c.connector_id == connector_id)
            .values(owner=owner, expires_at=expires)
        )
    if held:
        return LeaseGrant(connector_id, expires, "renewed", previous_owner=owner)
    if row.owner is not None:
        return LeaseGrant(
            connector_id,
            expires,
            "expired",
            previous_owner=row.owner,
            tokens=0.0,
            tokens_at=row.expires_at,
        )
    if row.tokens is None or row.tokens_at is None:
        return LeaseGrant(connector_id, expires, "new")
    return LeaseGrant(
        connector_id, expires, "released", tokens=float(row.tokens), tokens_at=row.tokens_at
    )


async def release_connector_lease(
    db: Database, connector_id: int, owner: str, *, tokens: float, at: datetime
) -> bool:
    """Let go of a lease, leaving the bucket's `tokens` at `at` to the next holder.

    False if `owner` no longer held it (it expired and another worker took it).
    """
    async with db.transaction() as conn:
        result = await conn.execute(
            update(connector_leases)
            .where(connector_leases.c.connector_id == connector_id)
            .where(connector_leases.c.owner == owner)
            .values(owner=None, expires_at=None, tokens=tokens, tokens_at=at)
        )
    return bool(result.rowcount)


async def lease_holders(db: Database) -> dict[int, tuple[str | None, datetime | None]]:
    """Every connector lease: its holder and expiry (None when free)."""
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                connector_leases.c.connector_id,
                connector_leases.c.owner,
                connector_leases.c.expires_at,
            )
        )
        return {int(r.connector_id): (r.owner, r.expires_at) for r in rows}
