"""API keys: shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select
from store_samples import NOW

from smsrelay.store.api_keys import (
    authenticate_api_key,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from smsrelay.store.database import Database
from smsrelay.store.tables import api_keys


async def test_key_is_shown_once_and_stored_only_as_a_hash(database: Database) -> None:
    key, plaintext = await create_api_key(database, "ci", now=NOW)
    assert plaintext.startswith("sr_") and len(plaintext) > 40
    assert (key.name, key.prefix, key.created_at, key.active) == ("ci", plaintext[:8], NOW, True)
    async with database.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert plaintext not in [str(value) for value in row]
    assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()


async def test_authentication_accepts_only_the_exact_active_key(database: Database) -> None:
    key, plaintext = await create_api_key(database, "app", now=NOW)
    found = await authenticate_api_key(database, plaintext, now=NOW + timedelta(hours=1))
    assert found is not None and found.id == key.id
    assert found.last_used_at == NOW + timedelta(hours=1)
    assert await authenticate_api_key(database, plaintext[:-1]) is None
    assert await authenticate_api_key(database, "sr_" + "x" * 43) is None
    assert await authenticate_api_key(database, "") is None

    assert await revoke_api_key(database, key.id, now=NOW) is True
    assert await authenticate_api_key(database, plaintext) is None
    assert await revoke_api_key(database, key.id) is False


async def test_last_use_is_noted_at_most_once_a_minute(database: Database) -> None:
    _, plaintext = await create_api_key(database, "app", now=NOW)
    await authenticate_api_key(database, plaintext, now=NOW)
    again = await authenticate_api_key(database, plaintext, now=NOW + timedelta(seconds=30))
    assert again is not None and again.last_used_at == NOW
    later = await authenticate_api_key(database, plaintext, now=NOW + timedelta(minutes=2))
    assert later is not None and later.last_used_at == NOW + timedelta(minutes=2)


async def test_list_shows_every_key_without_secrets(database: Database) -> None:
    first, _ = await create_api_key(database, "one", now=NOW)
    second, _ = await create_api_key(database, "two", now=NOW)
    await revoke_api_key(database, first.id, now=NOW)
    listed = await list_api_keys(database)
    assert [(k.name, k.active) for k in listed] == [("one", False), ("two", True)]
    assert listed[1] == second
