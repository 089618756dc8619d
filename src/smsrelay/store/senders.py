"""Senders: named sending identities on a connector, with one default per type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import Select, delete, false, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.connector_groups import ConnectorGroupError, group_for_sender, link_sender
from smsrelay.store.connectors import connector_id_by_name
from smsrelay.store.database import AnyRow, Database
from smsrelay.store.errors import ConnectorNotFound, NoSender, SenderError
from smsrelay.store.tables import connector_groups, connectors, sender_connector_groups, senders
from smsrelay.store.timestamps import utc_now

SenderType = Literal["transactional", "promotional"]
SENDER_TYPES: tuple[str, ...] = get_args(SenderType)
SENDER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender: the sender ID given to the provider, on which connector, of which type.

    A sender pointing to a connector group has `connector_group` set and `connector_name`
    equal to it (what the sender names); `connector_id` is the group's first connector.
    """

    id: int
    name: str
    connector_id: int
    connector_name: str
    sender_id: str
    type: str
    is_default: bool
    created_at: datetime
    connector_group: str | None = None


def _query() -> Select[Any]:
    return (
        select(
            senders,
            connectors.c.name.label("connector_name"),
            connector_groups.c.name.label("connector_group"),
        )
        .join(connectors, connectors.c.id == senders.c.connector_id)
        .outerjoin(sender_connector_groups, sender_connector_groups.c.sender_id == senders.c.id)
        .outerjoin(connector_groups, connector_groups.c.id == sender_connector_groups.c.group_id)
    )


def _sender(row: AnyRow) -> Sender:
    return Sender(
        id=row.id,
        name=row.name,
        connector_id=row.connector_id,
        connector_name=row.connector_group or row.connector_name,
        sender_id=row.sender_id,
        type=row.type,
        is_default=bool(row.is_default),
        created_at=row.created_at,
        connector_group=row.connector_group,
    )


def _check_type(kind: str) -> None:
    if kind not in SENDER_TYPES:
        raise SenderError("type", f"must be one of {', '.join(SENDER_TYPES)} (got {kind!r})")


def _check_sender_id(sender_id: str) -> None:
    if not sender_id.strip() or len(sender_id) > 64:
        raise SenderError("sender_id", "must be 1 to 64 characters (e.g. TXTSMS or +4915112345678)")


async def _resolve_connector(conn: AsyncConnection, name: str) -> tuple[int, int | None]:
    """(connector id, group id) for a connector or connector-group name."""
    try:
        return await connector_id_by_name(conn, name), None
    except ConnectorNotFound:
        pass
    try:
        group = await group_for_sender(conn, name)
    except ConnectorGroupError as exc:
        raise SenderError("connector", exc.message) from None
    if group is None:
        raise SenderError("connector", f"no connector or connector group named {name!r}")
    group_id, first_connector_id = group
    return first_connector_id, group_id


async def _unset_default(conn: AsyncConnection, kind: str) -> None:
    await conn.execute(
        update(senders)
        .where(senders.c.type == kind)
        .where(senders.c.is_default)
        .values(is_default=false())
    )


async def _fetch(conn: AsyncConnection, name: str) -> Sender | None:
    row = (await conn.execute(_query().where(senders.c.name == name))).first()
    return _sender(row) if row is not None else None


async def create_sender(
    db: Database,
    *,
    name: str,
    connector: str,
    sender_id: str,
    type: str = "transactional",
    is_default: bool = False,
    now: datetime | None = None,
) -> Sender:
    """Create a sender on the named connector; a new default replaces the old one of its type."""
    if not SENDER_NAME_PATTERN.match(name):
        raise SenderError(
            "name", "use 1-64 characters A-Z, a-z, 0-9, _, . or -, starting with a letter or digit"
        )
    _check_type(type)
    _check_sender_id(sender_id)
    try:
        async with db.transaction() as conn:
            connector_id, group_id = await _resolve_connector(conn, connector)
            if await _fetch(conn, name) is not None:
                raise SenderError("name", f"a sender named {name!r} already exists")
            if is_default:
                await _unset_default(conn, type)
            await conn.execute(
                insert(senders).values(
                    name=name,
                    connector_id=connector_id,
                    sender_id=sender_id,
                    type=type,
                    is_default=is_default,
                    created_at=now or utc_now(),
                )
            )
            if group_id is not None:
                sender_row_id = (
                    await conn.execute(select(senders.c.id).where(senders.c.name == name))
                ).scalar_one()
                await link_sender(conn, sender_row_id, group_id)
            created = await _fetch(conn, name)
    except IntegrityError:
        raise SenderError(
            "name", f"a sender named {name!r} or another default {type} sender was just created"
        ) from None
    assert created is not None
    return created


async def list_senders(db: Database) -> list[Sender]:
    """Every sender, by name."""
    async with db.connect() as conn:
        rows = (await conn.execute(_query().order_by(senders.c.name))).all()
    return [_sender(row) for row in rows]


async def get_sender(db: Database, name: str) -> Sender | None:
    """The sender with this name, or None."""
    async with db.connect() as conn:
        return await _fetch(conn, name)


async def update_sender(
    db: Database,
    name: str,
    *,
    connector: str | None = None,
    sender_id: str | None = None,
    type: str | None = None,
    is_default: bool | None = None,
) -> Sender | None:
    """Change the given fields of a sender (None leaves a field as it is); None if not found.

    Making a sender the default (or moving a default sender to another type) unsets the
    previous default of that type.
    """
    if type is not None:
        _check_type(type)
    if sender_id is not None:
        _check_sender_id(sender_id)
    try:
        async with db.transaction() as conn:
            current = await _fetch(conn, name)
            if current is None:
                return None
            values: dict[str, Any] = {}
            if connector is not None:
                values["connector_id"], group_id = await _resolve_connector(conn, connector)
                await link_sender(conn, current.id, group_id)
            if sender_id is not None:
                values["sender_id"] = sender_id
            if type is not None:
                values["type"] = type
            if is_default is not None:
                values["is_default"] = is_default
            will_be_default = current.is_default if is_default is None else is_default
            new_type = type or current.type
            if will_be_default and (not current.is_default or new_type != current.type):
                await _unset_default(conn, new_type)
            if values:
                await conn.execute(update(senders).where(senders.c.id == current.id).values(values))
            updated = await _fetch(conn, name)
    except IntegrityError:
        raise SenderError(
            "is_default", "another default sender of this type was just set"
        ) from None
    return updated


async def delete_sender(db: Database, name: str) -> bool:
    """Delete a sender; False if there is none. Messages keep the sender name they used."""
    async with db.transaction() as conn:
        result = await conn.execute(delete(senders).where(senders.c.name == name))
    return bool(result.rowcount)


async def resolve_sender(db: Database, name: str | None, type: str = "transactional") -> Sender:
    """The sender a message uses: the named one, else the default of `type`.

    Raises `NoSender` saying what is missing.
    """
    async with db.connect() as conn:
        if name is not None:
            sender = await _fetch(conn, name)
            if sender is None:
                raise NoSender(f"no sender named {name!r}")
            return sender
        _check_type(type)
        row = (
            await conn.execute(_query().where(senders.c.type == type).where(senders.c.is_default))
        ).first()
    if row is None:
        raise NoSender(
            f"no sender given and there is no default {type} sender; name a sender, "
            f"or make one the default for {type} messages"
        )
    return _sender(row)
