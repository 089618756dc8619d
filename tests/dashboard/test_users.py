"""Dashboard users at rest: scrypt hashes, sessions ended by version, the shared signing key."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.tables import dashboard_users
from smsrelay.store.users import (
    UserError,
    authenticate_user,
    check_password,
    create_user,
    delete_user,
    end_sessions,
    get_user,
    hash_password,
    list_users,
    session_signing_key,
    set_password,
)

PASSWORD = "correct horse battery"


def test_a_password_hash_is_salted_scrypt_and_checks_only_its_password() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$") and first != second
    assert check_password(PASSWORD, first) and check_password(PASSWORD, second)
    assert not check_password(PASSWORD + "!", first)
    assert not check_password(PASSWORD, "pbkdf2$garbage")


async def test_a_user_signs_in_with_their_password_only(database: Database) -> None:
    created = await create_user(database, "maya", PASSWORD)
    assert created.last_login_at is None
    assert await authenticate_user(database, "maya", "wrong password") is None
    assert await authenticate_user(database, "nobody", PASSWORD) is None
    signed = await authenticate_user(database, "maya", PASSWORD)
    assert signed is not None and signed.id == created.id and signed.last_login_at is not None
    async with database.connect() as conn:
        stored = (await conn.execute(select(dashboard_users.c.password_hash))).scalar_one()
    assert PASSWORD not in stored


async def test_names_are_unique_and_passwords_long_enough(database: Database) -> None:
    await create_user(database, "maya", PASSWORD)
    with pytest.raises(UserError, match="already exists"):
        await create_user(database, "maya", PASSWORD)
    with pytest.raises(UserError, match="at least 8"):
        await create_user(database, "li", "short")
    with pytest.raises(UserError) as refused:
        await create_user(database, "has space", PASSWORD)
    assert refused.value.field == "name"
    assert [u.name for u in await list_users(database)] == ["maya"]


async def test_logout_and_a_new_password_end_the_sessions_issued_before(database: Database) -> None:
    user = await create_user(database, "maya", PASSWORD)
    await end_sessions(database, user.id)
    after_logout = await get_user(database, user.id)
    assert after_logout is not None and after_logout.session_version == user.session_version + 1
    assert await set_password(database, "maya", "another good password")
    after_change = await get_user(database, user.id)
    assert after_change is not None and after_change.session_version == user.session_version + 2
    assert await authenticate_user(database, "maya", PASSWORD) is None
    assert await authenticate_user(database, "maya", "another good password") is not None
    assert not await set_password(database, "nobody", "another good password")
    assert await delete_user(database, "maya")
    assert await get_user(database, user.id) is None


async def test_the_signing_key_is_made_once_and_sealed(database: Database) -> None:
    box = SecretBox([generate_secret_key()])
    key = await session_signing_key(database, box)
    assert len(key) == 32
    assert await session_signing_key(database, box) == key
    # The secret keys it was sealed with are gone: a new key replaces it (everyone signs in).
    replaced = await session_signing_key(database, SecretBox([generate_secret_key()]))
    assert replaced != key
