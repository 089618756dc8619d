"""Connectors at rest: versioned definitions, encrypted secrets, per-connector DLR tokens.

A connector row holds the current version; `connector_versions` keeps every saved version.
The definition is stored as its export without secrets; the secrets dict is sealed
separately by the `SecretBox`, so a database dump alone reveals no credentials.
"""

from __future__ import annotations

import secrets as token_source
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.definition import SECRET_MASK, ConnectorDefinition, parse_definition
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.store.database import AnyRow, Database
from smsrelay.store.errors import ConnectorInUse, ConnectorNotFound
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import connector_versions, connectors, messages, senders
from smsrelay.store.timestamps import utc_now

# Messages in these statuses still need their connector to be sent.
_WAITING = (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.DISPATCH_ERROR)


@dataclass(frozen=True, slots=True)
class StoredConnector:
    """A saved connector: its current definition (secrets decrypted) and bookkeeping."""

    id: int
    name: str
    version: int
    definition: ConnectorDefinition
    dlr_token: str
    created_at: datetime
    updated_at: datetime


def new_dlr_token() -> str:
    """An unguessable token for a connector's delivery-report URL."""
    return token_source.token_urlsafe(24)


def merge_secrets(
    given: Mapping[str, str], stored: Mapping[str, str], *, replace: bool
) -> dict[str, str]:
    """The secrets to keep: given values, `***` meaning "unchanged", omitted ones kept.

    With `replace`, secrets missing from `given` are dropped instead of kept.
    """
    merged: dict[str, str] = {} if replace else dict(stored)
    problems: list[FieldError] = []
    for name, value in given.items():
        if value != SECRET_MASK:
            merged[name] = value
        elif name in stored:
            merged[name] = stored[name]
        else:
            problems.append(
                FieldError(
                    f"secrets.{name}",
                    f"is {SECRET_MASK!r}, which keeps a stored value, but none is stored; "
                    "give the secret's value",
                )
            )
    if problems:
        raise DefinitionError(problems)
    return merged


def _document(definition: ConnectorDefinition) -> dict[str, Any]:
    document = definition.export(mask_secrets=True)
    document.pop("secrets", None)
    return document


def _stored(row: AnyRow, box: SecretBox) -> StoredConnector:
    definition = ConnectorDefinition.model_validate(
        {**row.definition, "secrets": box.open(row.secrets)}
    )
    return StoredConnector(
        id=row.id,
        name=row.name,
        version=row.version,
        definition=definition,
        dlr_token=row.dlr_token,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def save_connector(
    db: Database,
    box: SecretBox,
    definition: ConnectorDefinition,
    *,
    replace_secrets: bool = False,
    now: datetime | None = None,
) -> StoredConnector:
    """Create a connector, or save a new version of the one with that name.

    A secret given as `***` keeps its stored value; an omitted secret is kept too unless
    `replace_secrets`. The merged definition is validated again (it may reference secrets
    only the stored version has) and raises `DefinitionError` if invalid. Saving a
    definition identical to the current version changes nothing.
    """
    try:
        return await _save(db, box, definition, replace_secrets, now or utc_now())
    except IntegrityError:
        # Another process created the same name between our read and our insert: saving
        # again turns this call into a new version of that connector.
        return await _save(db, box, definition, replace_secrets, now or utc_now())


async def _save(
    db: Database,
    box: SecretBox,
    definition: ConnectorDefinition,
    replace_secrets: bool,
    now: datetime,
) -> StoredConnector:
    async with db.transaction() as conn:
        query = select(connectors).where(connectors.c.name == definition.name).with_for_update()
        row = (await conn.execute(query)).first()
        stored_secrets = box.open(row.secrets) if row is not None else {}
        secrets = merge_secrets(definition.secrets, stored_secrets, replace=replace_secrets)
        merged = parse_definition({**definition.export(mask_secrets=False), "secrets": secrets})
        document = _document(merged)
        if row is not None and row.definition == document and stored_secrets == secrets:
            return _stored(row, box)
        sealed = box.seal(secrets)
        if row is None:
            values = {
                "name": merged.name,
                "version": 1,
                "definition": document,
                "secrets": sealed,
                "dlr_token": new_dlr_token(),
                "created_at": now,
                "updated_at": now,
            }
            result = await conn.execute(insert(connectors).values(values).returning(connectors))
        else:
            values = {
                "version": row.version + 1,
                "definition": document,
                "secrets": sealed,
                "updated_at": now,
            }
            result = await conn.execute(
                update(connectors)
                .where(connectors.c.id == row.id)
                .values(values)
                .returning(connectors)
            )
        saved = result.one()
        await conn.execute(
            insert(connector_versions).values(
                connector_id=saved.id,
                version=saved.version,
                definition=document,
                secrets=sealed,
                created_at=now,
            )
        )
    return _stored(saved, box)


async def _one(db: Database, box: SecretBox, where: Any) -> StoredConnector | None:
    async with db.connect() as conn:
        row = (await conn.execute(select(connectors).where(where))).first()
    return _stored(row, box) if row is not None else None


async def get_connector(db: Database, box: SecretBox, name: str) -> StoredConnector | None:
    """The connector with this name, or None."""
    return await _one(db, box, connectors.c.name == name)


async def get_connector_by_id(
    db: Database, box: SecretBox, connector_id: int
) -> StoredConnector | None:
    """The connector with this id, or None."""
    return await _one(db, box, connectors.c.id == connector_id)


async def get_connector_by_dlr_token(
    db: Database, box: SecretBox, token: str
) -> StoredConnector | None:
    """The connector whose delivery-report URL carries this token, or None."""
    return await _one(db, box, connectors.c.dlr_token == token)


async def list_connectors(db: Database, box: SecretBox) -> list[StoredConnector]:
    """Every connector, by name."""
    async with db.connect() as conn:
        rows = (await conn.execute(select(connectors).order_by(connectors.c.name))).all()
    return [_stored(row, box) for row in rows]


async def delete_connector(db: Database, name: str) -> bool:
    """Delete a connector and its history of versions; False if there is none.

    Refused with `ConnectorInUse` while messages are queued or sending through it, or
    senders point to it. Its past messages stay readable.
    """
    async with db.transaction() as conn:
        query = select(connectors.c.id).where(connectors.c.name == name).with_for_update()
        connector_id = (await conn.execute(query)).scalar_one_or_none()
        if connector_id is None:
            return False
        waiting = (
            await conn.execute(
                select(func.count())
                .select_from(messages)
                .where(messages.c.connector_id == connector_id)
                .where(messages.c.status.in_([str(s) for s in _WAITING]))
            )
        ).scalar_one()
        if waiting:
            raise ConnectorInUse(
                name,
                f"{waiting} message(s) are still queued or sending through it; "
                "cancel them or wait until they are sent",
            )
        sender_names = (
            await conn.execute(
                select(senders.c.name)
                .where(senders.c.connector_id == connector_id)
                .order_by(senders.c.name)
            )
        ).scalars()
        used_by = list(sender_names)
        if used_by:
            raise ConnectorInUse(
                name,
                f"sender(s) {', '.join(used_by)} use it; delete them or move them to "
                "another connector first",
            )
        await conn.execute(
            delete(connector_versions).where(connector_versions.c.connector_id == connector_id)
        )
        await conn.execute(delete(connectors).where(connectors.c.id == connector_id))
    return True


async def rotate_dlr_token(db: Database, name: str, *, now: datetime | None = None) -> str:
    """Give a connector a new delivery-report token (the old URL stops working at once)."""
    token = new_dlr_token()
    async with db.transaction() as conn:
        result = await conn.execute(
            update(connectors)
            .where(connectors.c.name == name)
            .values(dlr_token=token, updated_at=now or utc_now())
        )
        if result.rowcount == 0:
            raise ConnectorNotFound(name)
    return token


async def reencrypt_all(db: Database, box: SecretBox) -> int:
    """Re-seal every connector's secrets (and past versions) with the newest key.

    Returns the number of connectors re-sealed. Run after putting a new key first in
    SMSRELAY_SECRET_KEYS; the old key can be dropped once this has run.
    """
    async with db.transaction() as conn:
        current = (await conn.execute(select(connectors.c.id, connectors.c.secrets))).all()
        if current:
            await conn.execute(
                update(connectors)
                .where(connectors.c.id == bindparam("b_id"))
                .values(secrets=bindparam("b_secrets")),
                [{"b_id": row.id, "b_secrets": box.rotate(row.secrets)} for row in current],
            )
        history = (
            await conn.execute(
                select(
                    connector_versions.c.connector_id,
                    connector_versions.c.version,
                    connector_versions.c.secrets,
                )
            )
        ).all()
        if history:
            await conn.execute(
                update(connector_versions)
                .where(connector_versions.c.connector_id == bindparam("b_id"))
                .where(connector_versions.c.version == bindparam("b_version"))
                .values(secrets=bindparam("b_secrets")),
                [
                    {
                        "b_id": row.connector_id,
                        "b_version": row.version,
                        "b_secrets": box.rotate(row.secrets),
                    }
                    for row in history
                ],
            )
    return len(current)


async def connector_id_by_name(conn: AsyncConnection, name: str) -> int:
    """The id of the named connector, on an open connection; raises ConnectorNotFound."""
    connector_id = (
        await conn.execute(select(connectors.c.id).where(connectors.c.name == name))
    ).scalar_one_or_none()
    if connector_id is None:
        raise ConnectorNotFound(name)
    return int(connector_id)
