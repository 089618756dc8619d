"""Dashboard users: names and scrypt password hashes; the dashboard's session signing key.

Passwords are hashed with scrypt (a per-user random salt, parameters stored in the hash so
they can be raised later) and checked in constant time; an unknown name costs the same
hash as a wrong password, so response time does not tell which names exist.

A user's `session_version` is part of every session cookie issued to them: logging out or
changing the password bumps it, and every cookie issued before stops working.

The key that signs session cookies is random, stored in `dashboard_keys` sealed by the
SecretBox (so a database dump alone cannot forge a session), shared by every process.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from smsrelay.store.database import AnyRow, Database
from smsrelay.store.errors import SecretKeyError, StoreError
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import dashboard_keys, dashboard_users
from smsrelay.store.timestamps import utc_now

USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and ~0.1 s per check on one core.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
SESSION_KEY_NAME = "session"


class UserError(StoreError):
    """A user was refused; `field` names the input (name, password)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class User:
    """A dashboard user's public facts."""

    id: int
    name: str
    session_version: int
    created_at: datetime
    last_login_at: datetime | None


def _user(row: AnyRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        session_version=row.session_version,
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


_PUBLIC = (
    dashboard_users.c.id,
    dashboard_users.c.name,
    dashboard_users.c.session_version,
    dashboard_users.c.created_at,
    dashboard_users.c.last_login_at,
)

# ---------------------------------------------------------------- password hashes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """The stored form of a password: `scrypt$N$r$p$salt$hash` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(base64.b64decode(expected)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so that case costs a full hash too."""
    return hash_password(secrets.token_urlsafe(16))


def check_new_password(password: str) -> None:
    """Refuse a password too short or too long to be used, with a message saying why."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")


# ---------------------------------------------------------------- users


async def create_user(
    db: Database, name: str, password: str, *, now: datetime | None = None
) -> User:
    """Create a dashboard user; raises UserError if the name is invalid or taken."""
    if not USER_NAME_PATTERN.match(name):
        raise UserError(
            "name",
            "use 1-64 characters A-Z, a-z, 0-9, _, ., @ or -, starting with a letter or digit",
        )
    check_new_password(password)
    stored = await asyncio.to_thread(hash_password, password)
    try:
        async with db.transaction() as conn:
            row = (
                await conn.execute(
                    insert(dashboard_users)
                    .values(
                        name=name,
                        password_hash=stored,
                        session_version=1,
                        created_at=now or utc_now(),
                    )
                    .returning(*_PUBLIC)
                )
            ).one()
    except IntegrityError:
        raise UserError("name", f"a user named {name!r} already exists") from None
    return _user(row)


async def set_password(db: Database, name: str, password: str) -> bool:
    """Change a user's password and end their sessions; False if there is no such user."""
    check_new_password(password)
    stored = await asyncio.to_thread(hash_password, password)
    async with db.transaction() as conn:
        result = await conn.execute(
            update(dashboard_users)
            .where(dashboard_users.c.name == name)
            .values(
                password_hash=stored,
                session_version=dashboard_users.c.session_version + 1,
            )
        )
    return bool(result.rowcount)


async def authenticate_user(
    db: Database, name: str, password: str, *, now: datetime | None = None
) -> User | None:
    """The user with this name and password, or None; notes the login time.

    The hash is computed in a thread: a login must not stall every other request.
    """
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(*_PUBLIC, dashboard_users.c.password_hash).where(
                    dashboard_users.c.name == name
                )
            )
        ).first()
    stored = row.password_hash if row is not None else _dummy_hash()
    matches = await asyncio.to_thread(check_password, password[:MAX_PASSWORD_LENGTH], stored)
    if row is None or not matches:
        return None
    at = now or utc_now()
    async with db.transaction() as conn:
        await conn.execute(
            update(dashboard_users).where(dashboard_users.c.id == row.id).values(last_login_at=at)
        )
    return User(
        id=row.id,
        name=row.name,
        session_version=row.session_version,
        created_at=row.created_at,
        last_login_at=at,
    )


async def get_user(db: Database, user_id: int) -> User | None:
    """The user with this id, or None."""
    async with db.connect() as conn:
        row = (await conn.execute(select(*_PUBLIC).where(dashboard_users.c.id == user_id))).first()
    return _user(row) if row is not None else None


async def list_users(db: Database) -> list[User]:
    """Every dashboard user, by name."""
    async with db.connect() as conn:
        rows = await conn.execute(select(*_PUBLIC).order_by(dashboard_users.c.name))
        return [_user(row) for row in rows]


async def end_sessions(db: Database, user_id: int) -> None:
    """Invalidate every session cookie issued to this user so far (logout)."""
    async with db.transaction() as conn:
        await conn.execute(
            update(dashboard_users)
            .where(dashboard_users.c.id == user_id)
            .values(session_version=dashboard_users.c.session_version + 1)
        )


async def delete_user(db: Database, name: str) -> bool:
    """Delete a user (their sessions end with it); False if there is none."""
    async with db.transaction() as conn:
        result = await conn.execute(delete(dashboard_users).where(dashboard_users.c.name == name))
    return bool(result.rowcount)


# ---------------------------------------------------------------- session signing key


async def session_signing_key(db: Database, box: SecretBox) -> bytes:
    """The key that signs dashboard session cookies: made once, shared by every process.

    If the stored key cannot be opened (the secret keys it was sealed with are gone), a
    new one replaces it: every user is logged out, nothing else is lost.
    """
    for _ in range(3):
        async with db.connect() as conn:
            sealed = (
                await conn.execute(
                    select(dashboard_keys.c.sealed).where(dashboard_keys.c.name == SESSION_KEY_NAME)
                )
            ).scalar_one_or_none()
        if sealed is not None:
            key = _open_key(box, sealed)
            if key is not None:
                return key
        key = secrets.token_bytes(32)
        values = {"sealed": box.seal({"key": _b64(key)}), "created_at": utc_now()}
        try:
            async with db.transaction() as conn:
                if sealed is None:
                    await conn.execute(
                        insert(dashboard_keys).values(name=SESSION_KEY_NAME, **values)
                    )
                    return key
                replaced = await conn.execute(
                    update(dashboard_keys)
                    .where(dashboard_keys.c.name == SESSION_KEY_NAME)
                    .where(dashboard_keys.c.sealed == sealed)
                    .values(**values)
                )
                if replaced.rowcount:
                    return key
        except IntegrityError:
            pass  # another process stored one first: read it
    raise StoreError("the dashboard session key kept changing while it was read; retry")


def _open_key(box: SecretBox, sealed: bytes) -> bytes | None:
    try:
        return base64.b64decode(box.open(sealed)["key"])
    except (SecretKeyError, KeyError, ValueError):
        return None
