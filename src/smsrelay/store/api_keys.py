"""API keys: bearer credentials, shown once and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update

from smsrelay.store.database import AnyRow, Database
from smsrelay.store.tables import api_keys
from smsrelay.store.timestamps import utc_now

KEY_PREFIX = "sr_"
# Writing last_used_at on every request would make each API call a write transaction.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public facts; `prefix` (its first 8 characters) identifies it in lists."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key is still accepted."""
        return self.revoked_at is None


def hash_api_key(plaintext: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _api_key(row: AnyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


_PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


async def create_api_key(
    db: Database, name: str, *, now: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns it and its plaintext, which is never available again."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                insert(api_keys)
                .values(
                    name=name,
                    prefix=plaintext[:8],
                    key_hash=hash_api_key(plaintext),
                    created_at=now or utc_now(),
                )
                .returning(*_PUBLIC_COLUMNS)
            )
        ).one()
    return _api_key(row), plaintext


async def authenticate_api_key(
    db: Database, plaintext: str, *, now: datetime | None = None
) -> ApiKey | None:
    """The active key with this plaintext, or None; notes when it was last used.

    Looked up by hash, so response time does not depend on how much of a guess matches.
    """
    if not plaintext.startswith(KEY_PREFIX):
        return None
    digest = hash_api_key(plaintext)
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(*_PUBLIC_COLUMNS, api_keys.c.key_hash)
                .where(api_keys.c.key_hash == digest)
                .where(api_keys.c.revoked_at.is_(None))
            )
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    now = now or utc_now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        async with db.transaction() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == row.id)
                .where(
                    or_(
                        api_keys.c.last_used_at.is_(None),
                        api_keys.c.last_used_at < now - LAST_USED_PRECISION,
                    )
                )
                .values(last_used_at=now)
            )
        return ApiKey(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=now,
            revoked_at=None,
        )
    return _api_key(row)


async def list_api_keys(db: Database) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    async with db.connect() as conn:
        rows = await conn.execute(select(*_PUBLIC_COLUMNS).order_by(api_keys.c.id))
        return [_api_key(row) for row in rows]


async def revoke_api_key(db: Database, key_id: int, *, now: datetime | None = None) -> bool:
    """Stop accepting a key; False if there is no such active key."""
    async with db.transaction() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .where(api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now or utc_now())
        )
    return bool(result.rowcount)
