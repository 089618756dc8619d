"""Connector groups: an ordered list of connectors behind one sender, for failover.

A sender points to a group by naming it where it would name a connector (`connector`),
so groups and connectors share one namespace. The sender's `connector_id` is kept equal
to the group's first connector: intake, and everything else that reads a sender, sends
there first. When a message fails on a connector (rejected, or out of retries),
`failover_routes` finds the next connector of its sender's group, and `store.attempt_results`
moves the message there with its attempts restarted (see `record_attempts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import AnyRow, Database
from smsrelay.store.errors import StoreError
from smsrelay.store.tables import (
    connector_group_members,
    connector_groups,
    connectors,
    messages,
    sender_connector_groups,
    senders,
)
from smsrelay.store.timestamps import utc_now

GROUP_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_MEMBERS = 16
_CHUNK = 1000


class ConnectorGroupError(StoreError):
    """A group was refused; `field` names the offending input (`name`, `connectors[1]`...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConnectorGroupInUse(StoreError):
    """A group cannot be deleted while senders point to it."""

    def __init__(self, name: str, used_by: Sequence[str]) -> None:
        self.name = name
        self.used_by = list(used_by)
        super().__init__(
            f"connector group {name!r} cannot be deleted: sender(s) {', '.join(used_by)} use "
            "it; delete them or move them to a connector first"
        )


@dataclass(frozen=True, slots=True)
class ConnectorGroup:
    """A group: its connectors in failover order, and the senders pointing to it."""

    id: int
    name: str
    connectors: tuple[str, ...]
    connector_ids: tuple[int, ...]
    senders: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Failover:
    """Where a message failing on connector `from_id` goes next, within `group`."""

    group: str
    from_id: int
    from_name: str
    to_id: int
    to_name: str

    def note(self, reason: str | None) -> str:
        """The history line: `failover from A to B: reason`."""
        why = f": {reason}" if reason else ""
        return f"failover from {self.from_name} to {self.to_name}{why}"


def next_member(
    members: Sequence[tuple[int, str]], current: int
) -> tuple[tuple[int, str], tuple[int, str]] | None:
    """(current member, next member) of an ordered group, or None (last, or not a member)."""
    ids = [member_id for member_id, _ in members]
    if current not in ids:
        return None
    position = ids.index(current)
    if position + 1 >= len(members):
        return None
    return members[position], members[position + 1]


# ---------------------------------------------------------------- reading


async def _members(
    conn: AsyncConnection, group_ids: Sequence[int]
) -> dict[int, list[tuple[int, str]]]:
    found: dict[int, list[tuple[int, str]]] = {group_id: [] for group_id in group_ids}
    if not group_ids:
        return found
    rows = await conn.execute(
        select(connector_group_members.c.group_id, connectors.c.id, connectors.c.name)
        .join(connectors, connectors.c.id == connector_group_members.c.connector_id)
        .where(connector_group_members.c.group_id.in_(group_ids))
        .order_by(connector_group_members.c.group_id, connector_group_members.c.position)
    )
    for group_id, connector_id, name in rows:
        found[group_id].append((connector_id, name))
    return found


async def _groups(conn: AsyncConnection, name: str | None = None) -> list[ConnectorGroup]:
    query = select(connector_groups).order_by(connector_groups.c.name)
    if name is not None:
        query = query.where(connector_groups.c.name == name)
    rows = (await conn.execute(query)).all()
    ids = [row.id for row in rows]
    members = await _members(conn, ids)
    users: dict[int, list[str]] = {group_id: [] for group_id in ids}
    if ids:
        linked = await conn.execute(
            select(sender_connector_groups.c.group_id, senders.c.name)
            .join(senders, senders.c.id == sender_connector_groups.c.sender_id)
            .where(sender_connector_groups.c.group_id.in_(ids))
            .order_by(senders.c.name)
        )
        for group_id, sender_name in linked:
            users[group_id].append(sender_name)
    return [
        ConnectorGroup(
            id=row.id,
            name=row.name,
            connectors=tuple(n for _, n in members[row.id]),
            connector_ids=tuple(i for i, _ in members[row.id]),
            senders=tuple(users[row.id]),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


async def list_connector_groups(db: Database) -> list[ConnectorGroup]:
    """Every group, by name."""
    async with db.connect() as conn:
        return await _groups(conn)


async def get_connector_group(db: Database, name: str) -> ConnectorGroup | None:
    """The group with this name, or None."""
    async with db.connect() as conn:
        found = await _groups(conn, name)
    return found[0] if found else None


async def group_for_sender(conn: AsyncConnection, name: str) -> tuple[int, int] | None:
    """(group id, first connector id) of the group a sender may name, or None.

    Raises ConnectorGroupError when the group exists but has no connector left.
    """
    group_id = (
        await conn.execute(select(connector_groups.c.id).where(connector_groups.c.name == name))
    ).scalar_one_or_none()
    if group_id is None:
        return None
    first = (await _members(conn, [group_id]))[group_id]
    if not first:
        raise ConnectorGroupError(
            "connector", f"connector group {name!r} has no connectors left; add one first"
        )
    return int(group_id), first[0][0]


async def link_sender(conn: AsyncConnection, sender_id: int, group_id: int | None) -> None:
    """Point a sender to a group (None: to its connector alone), on an open transaction."""
    await conn.execute(
        delete(sender_connector_groups).where(sender_connector_groups.c.sender_id == sender_id)
    )
    if group_id is not None:
        await conn.execute(
            insert(sender_connector_groups).values(sender_id=sender_id, group_id=group_id)
        )


# ---------------------------------------------------------------- writing


def _check_members(name: str, connector_names: Sequence[str]) -> None:
    if not GROUP_NAME_PATTERN.match(name):
        raise ConnectorGroupError(
            "name", "use 1-64 characters a-z, 0-9, _ or -, starting with a letter or digit"
        )
    if not connector_names:
        raise ConnectorGroupError("connectors", "list at least one connector, in failover order")
    if len(connector_names) > MAX_MEMBERS:
        raise ConnectorGroupError("connectors", f"a group holds at most {MAX_MEMBERS} connectors")
    seen: set[str] = set()
    for index, member in enumerate(connector_names):
        if member in seen:
            raise ConnectorGroupError(f"connectors[{index}]", f"{member!r} is listed twice")
        seen.add(member)


async def save_connector_group(
    db: Database, name: str, connector_names: Sequence[str], *, now: datetime | None = None
) -> tuple[ConnectorGroup, bool]:
    """Create or replace a group's connectors (in failover order); returns (group, created).

    Senders pointing to the group move to its new first connector in the same transaction.
    """
    _check_members(name, connector_names)
    at = now or utc_now()
    try:
        async with db.transaction() as conn:
            clash = (
                await conn.execute(select(connectors.c.id).where(connectors.c.name == name))
            ).scalar_one_or_none()
            if clash is not None:
                raise ConnectorGroupError(
                    "name",
                    f"a connector is named {name!r}; senders name groups and connectors alike, "
                    "so choose another name",
                )
            ids: list[int] = []
            for index, member in enumerate(connector_names):
                found = (
                    await conn.execute(select(connectors.c.id).where(connectors.c.name == member))
                ).scalar_one_or_none()
                if found is None:
                    raise ConnectorGroupError(
                        f"connectors[{index}]", f"no connector named {member!r}"
                    )
                ids.append(int(found))
            group_id = (
                await conn.execute(
                    select(connector_groups.c.id)
                    .where(connector_groups.c.name == name)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            created = group_id is None
            if group_id is None:
                result = await conn.execute(
                    insert(connector_groups).values(name=name, created_at=at, updated_at=at)
                )
                group_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                if group_id is None:  # pragma: no cover - both drivers return the key
                    group_id = (
                        await conn.execute(
                            select(connector_groups.c.id).where(connector_groups.c.name == name)
                        )
                    ).scalar_one()
            else:
                await conn.execute(
                    update(connector_groups)
                    .where(connector_groups.c.id == group_id)
                    .values(updated_at=at)
                )
                await conn.execute(
                    delete(connector_group_members).where(
                        connector_group_members.c.group_id == group_id
                    )
                )
            await conn.execute(
                insert(connector_group_members),
                [
                    {"group_id": group_id, "position": position, "connector_id": connector_id}
                    for position, connector_id in enumerate(ids)
                ],
            )
            linked = select(sender_connector_groups.c.sender_id).where(
                sender_connector_groups.c.group_id == group_id
            )
            await conn.execute(
                update(senders).where(senders.c.id.in_(linked)).values(connector_id=ids[0])
            )
            group = (await _groups(conn, name))[0]
    except IntegrityError:
        raise ConnectorGroupError(
            "name", f"a connector group named {name!r} was just created; try again"
        ) from None
    return group, created


async def delete_connector_group(db: Database, name: str) -> bool:
    """Delete a group; False if there is none. Refused while senders point to it."""
    async with db.transaction() as conn:
        found = await _groups(conn, name)
        if not found:
            return False
        group = found[0]
        if group.senders:
            raise ConnectorGroupInUse(name, group.senders)
        await conn.execute(delete(connector_groups).where(connector_groups.c.id == group.id))
    return True


# ---------------------------------------------------------------- failover


async def failover_routes(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, Failover]:
    """For messages failing now, the next connector of their sender's group, where one is.

    A message fails over when its sender points to a group and the message's connector is
    a member with another one after it. Read on the caller's transaction.
    """
    query = (
        select(
            messages.c.id,
            messages.c.connector_id,
            connector_groups.c.id.label("group_id"),
            connector_groups.c.name.label("group_name"),
        )
        .join(senders, senders.c.name == messages.c.sender_name)
        .join(sender_connector_groups, sender_connector_groups.c.sender_id == senders.c.id)
        .join(connector_groups, connector_groups.c.id == sender_connector_groups.c.group_id)
    )
    ids = list(message_ids)
    rows: list[AnyRow] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows += (await conn.execute(query.where(messages.c.id.in_(chunk)))).all()
    if not rows:
        return {}
    members = await _members(conn, sorted({row.group_id for row in rows}))
    routes: dict[str, Failover] = {}
    for row in rows:
        step = next_member(members[row.group_id], row.connector_id)
        if step is not None:
            (from_id, from_name), (to_id, to_name) = step
            routes[row.id] = Failover(row.group_name, from_id, from_name, to_id, to_name)
    return routes


__all__ = [
    "MAX_MEMBERS",
    "ConnectorGroup",
    "ConnectorGroupError",
    "ConnectorGroupInUse",
    "Failover",
    "delete_connector_group",
    "failover_routes",
    "get_connector_group",
    "group_for_sender",
    "link_sender",
    "list_connector_groups",
    "next_member",
    "save_connector_group",
]
