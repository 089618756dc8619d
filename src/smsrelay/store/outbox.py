"""The dispatch side of the outbox: claim due messages in batches, leases and deadlines.

Claims lease messages to one worker (`sending`, with `lease_owner` and an expiry kept in
`next_attempt_at` too, so one index finds what is due whatever the status). PostgreSQL
claims with `FOR UPDATE SKIP LOCKED`, so workers on many machines never wait for or take
each other's rows; SQLite claims inside `BEGIN IMMEDIATE`, on SQLite in a file on the
writer thread (`Database.write_at_once`). What sending did is written back by
`store.attempt_results`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.fast_dataclasses import positional_builder
from smsrelay.store.bulk_sql import (
    Codec,
    DriverStatement,
    id_list_condition,
)
from smsrelay.store.database import Database, Dialect
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.tables import (
    DISPATCHABLE,
    connectors,
    message_events,
    messages,
    provider_ids,
)
from smsrelay.store.timestamps import UTCDateTime, utc_now

S = MessageStatus
_CHUNK = 1000

# ---------------------------------------------------------------- claiming


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message leased to one worker for sending.

    `attempts` counts attempts recorded so far. `accepted_before` is True when the provider
    has evidently taken this message already (a provider id or a delivery report exists):
    a worker that crashed after sending but before recording left it `sending`, and it must
    not be sent again silently. `held_since` is when the message was first held as
    `dispatch_error` (failing credentials), None if it is not held.
    """

    id: str
    connector_id: int
    to: str
    body: str | None
    sender_id: str | None
    template_id: str | None
    template_variables: tuple[str, ...]
    entity_id: str | None
    campaign_id: str | None
    params: Mapping[str, str]
    attempts: int
    segments: int
    encoding: str
    previous_status: MessageStatus
    accepted_before: bool
    lease_expires_at: datetime
    held_since: datetime | None = None
    # Built once at claim time: grouping and rendering both ask for it.
    outbound: OutboundMessage | None = field(default=None, compare=False, repr=False)
    # SQLite in a file: the message's row as the claim left it (its id, `STATE_COLUMNS[1:]`
    # in the driver's form, its address). A group commit writes the row back only where it
    # is still so, and need not read it first (`store.attempt_results.plan_attempts`).
    as_claimed: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)

    def as_outbound(self) -> OutboundMessage:
        """The message as the connector engine renders it."""
        if self.outbound is not None:
            return self.outbound
        return OutboundMessage(
            message_id=self.id,
            to=self.to,
            body=self.body,
            sender=self.sender_id,
            template_id=self.template_id,
            template_variables=self.template_variables,
            entity_id=self.entity_id,
            campaign_id=self.campaign_id,
            params=self.params,
        )


_CLAIM_COLUMNS = (
    messages.c.id,
    messages.c.connector_id,
    messages.c.to,
    messages.c.body,
    messages.c.sender_id,
    messages.c.template_id,
    messages.c.template_variables,
    messages.c.entity_id,
    messages.c.campaign_id,
    messages.c.params,
    messages.c.attempts,
    messages.c.segments,
    messages.c.encoding,
    messages.c.held_since,
    # Not needed to send; with the above, the state a group commit checks (`as_claimed`).
    messages.c.failure_reason,
    messages.c.sent_at,
    messages.c.final_at,
)
# A message's state as a group commit reads and writes it (store.attempt_results).
STATE_COLUMNS = (
    messages.c.id,
    messages.c.connector_id,
    messages.c.status,
    messages.c.attempts,
    messages.c.held_since,
    messages.c.lease_owner,
    messages.c.lease_expires_at,
    messages.c.next_attempt_at,
    messages.c.failure_reason,
    messages.c.sent_at,
    messages.c.final_at,
)

# A claim row: id, previous status, due at, then _CLAIM_COLUMNS[1:] (see `_claimed`).
_ATTEMPTS_AT = 2 + [column.name for column in _CLAIM_COLUMNS].index("attempts")
_QUEUED = S.QUEUED.value
_SENDING = S.SENDING.value


def _is_due(now: datetime) -> Any:
    return DISPATCHABLE & (messages.c.next_attempt_at <= now)


async def due_connector_ids(db: Database, now: datetime) -> list[int]:
    """The connectors that have messages due at `now` (queued, retrying, or lease expired)."""
    # One index probe per connector, however many messages are queued.
    has_due = exists().where(messages.c.connector_id == connectors.c.id).where(_is_due(now))
    async with db.connect() as conn:
        rows = await conn.execute(select(connectors.c.id).where(has_due).order_by(connectors.c.id))
        return [int(connector_id) for connector_id in rows.scalars()]


@dataclass(frozen=True, slots=True)
class WaitingMessages:
    """How many of a connector's messages wait in one status, and the earliest due."""

    connector: str
    status: str
    messages: int
    earliest_due: datetime | None


async def waiting_messages(db: Database) -> list[WaitingMessages]:
    """Messages still to send (queued, sending, dispatch_error) per connector and status.

    Read through an index on status, so it costs what the outbox holds, not what the
    history holds. `earliest_due` is None for messages held without a due time (a paused
    campaign's).
    """
    counted = (
        select(
            messages.c.connector_id,
            messages.c.status,
            func.count().label("messages"),
            func.min(messages.c.next_attempt_at).label("earliest_due"),
        )
        .where(DISPATCHABLE)
        .group_by(messages.c.connector_id, messages.c.status)
        .subquery("counted")
    )
    query = (
        select(connectors.c.name, counted.c.status, counted.c.messages, counted.c.earliest_due)
        .join_from(counted, connectors, connectors.c.id == counted.c.connector_id)
        .order_by(connectors.c.name, counted.c.status)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        WaitingMessages(
            connector=row.name,
            status=row.status,
            messages=int(row.messages),
            earliest_due=row.earliest_due,
        )
        for row in rows
    ]


def _due_selection(dialect: str) -> Any:
    # The oldest due messages of one connector; the claim columns follow the first three.
    due = (
        select(
            messages.c.id,
            messages.c.status.label("previous_status"),
            messages.c.next_attempt_at.label("due_at"),
        )
        .where(messages.c.connector_id == bindparam("connector_id"))
        .where(DISPATCHABLE & (messages.c.next_attempt_at <= bindparam("now", type_=UTCDateTime())))
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(bindparam("limit", type_=Integer()))
    )
    return due if dialect == "sqlite" else due.with_for_update(skip_locked=True)


_LEASE_VALUES = {
    "status": bindparam("l_status"),
    "lease_owner": bindparam("l_owner"),
    "lease_expires_at": bindparam("l_expires", type_=UTCDateTime()),
    "next_attempt_at": bindparam("l_next", type_=UTCDateTime()),
    "updated_at": bindparam("l_updated", type_=UTCDateTime()),
}


def _claim_postgresql(dialect: str) -> Any:
    locked = _due_selection(dialect).cte("due")
    return (
        update(messages)
        .where(messages.c.id == locked.c.id)
        .values(_LEASE_VALUES)
        .returning(
            messages.c.id,
            locked.c.previous_status,
            locked.c.due_at,
            *_CLAIM_COLUMNS[1:],
            messages.c.id,  # the row's address, as SQLite's claim has its rowid
        )
    )


def row_address(dialect: Dialect) -> Any:
    """The column a message is updated by once found: SQLite's rowid (the string primary
    key would take one more index search per row), PostgreSQL's primary key."""
    return literal_column("messages.rowid") if dialect == "sqlite" else messages.c.id


# Compiled once per dialect (store.bulk_sql): a claim is three statements whatever its size.
# SQLite only: each row ends with its rowid, which the lease is written by.
_SELECT_DUE = DriverStatement(
    lambda d: _due_selection(d).add_columns(*_CLAIM_COLUMNS[1:], row_address(d).label("address")),
    packed=True,
)
_LEASE_PICKED = DriverStatement(
    lambda d: (
        update(messages).where(id_list_condition(row_address(d), "ids", d)).values(_LEASE_VALUES)
    )
)
_CLAIM_LOCKED = DriverStatement(_claim_postgresql)


async def claim_due_messages(
    db: Database,
    *,
    connector_id: int,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
) -> list[ClaimedMessage]:
    """Lease up to `limit` due messages of one connector to `worker_id`, oldest due first.

    Due means queued or dispatch_error with `next_attempt_at <= now`, or `sending` whose
    lease has expired (its worker died). Claimed messages are `sending` until
    `record_attempts` or `release_lease`.
    """
    if limit < 1:
        return []
    codec = Codec(db)
    expires = now + timedelta(seconds=lease_seconds)
    values = {
        "connector_id": connector_id,
        "now": codec.timestamp(now),
        "limit": limit,
        "l_status": S.SENDING.value,
        "l_owner": worker_id,
        "l_expires": codec.timestamp(expires),
        "l_next": codec.timestamp(expires),
        "l_updated": codec.timestamp(now),
    }
    if db.writes_at_once:
        picked = await db.write_at_once(functools.partial(_claim_now, db=db, values=values))
    else:
        async with db.transaction() as conn:
            if db.is_sqlite:
                # BEGIN IMMEDIATE holds the write lock: nothing changes in between.
                picked = await _SELECT_DUE.fetch(conn, db, values)
                if picked:
                    ids = json.dumps([row[-1] for row in picked])
                    await _LEASE_PICKED.execute(conn, db, {**values, "ids": ids})
            else:
                picked = await _CLAIM_LOCKED.fetch(conn, db, values)
    # Oldest due first (neither PostgreSQL's RETURNING nor SQLite's packed rows promise
    # the selection's order; SQLite's due times are text of one fixed width).
    picked.sort(key=lambda row: (row[2], row[0]))
    # A message first claimed from `queued` with no attempts cannot have been accepted.
    # Checked once leased to us: a provider id or report seen then was there before.
    suspects = [row[0] for row in picked if row[1] != _QUEUED or row[_ATTEMPTS_AT] > 0]
    accepted: set[str] = set()
    if suspects:
        async with db.connect() as conn:
            accepted = await _accepted_before(conn, suspects)
    # Built after the commit: Python work inside a write transaction holds up every other
    # writer (on SQLite the next group commit waits for it).
    # The lease as written (driver form), for rows a group commit checks instead of reading.
    lease = (worker_id, values["l_expires"], values["l_next"]) if db.writes_at_once else None
    claimed = [_claimed(row, codec, expires, lease) for row in picked]
    if accepted:
        claimed = [replace(m, accepted_before=True) if m.id in accepted else m for m in claimed]
    return claimed


def _claim_now(conn: sqlite3.Connection, *, db: Database, values: Mapping[str, Any]) -> list[Any]:
    """The SQLite claim on the writer thread: pick the due rows and lease them."""
    picked = _SELECT_DUE.fetch_now(conn, db, values)
    if picked:
        _LEASE_PICKED.execute_now(conn, db, {**values, "ids": json.dumps([r[-1] for r in picked])})
    return picked


async def _accepted_before(conn: AsyncConnection, suspects: Sequence[str]) -> set[str]:
    """Which of these messages a provider already accepted (a provider id or a report)."""
    found: set[str] = set()
    for start in range(0, len(suspects), _CHUNK):
        chunk = suspects[start : start + _CHUNK]
        query = union(
            select(provider_ids.c.message_id).where(provider_ids.c.message_id.in_(chunk)),
            select(message_events.c.message_id)
            .where(message_events.c.message_id.in_(chunk))
            .where(message_events.c.kind == "report"),
        )
        found.update((await conn.execute(query)).scalars())
    return found


_new_outbound = positional_builder(
    OutboundMessage, tuple(f.name for f in dataclasses.fields(OutboundMessage))
)


def _claimed(
    row: tuple[Any, ...], codec: Codec, expires: datetime, lease: tuple[Any, ...] | None
) -> ClaimedMessage:
    # Columns: id, previous_status, due_at, _CLAIM_COLUMNS[1:], the row's address.
    (
        message_id,
        previous_status,
        _due_at,
        connector_id,
        to,
        body,
        sender_id,
        template_id,
        template_variables,
        entity_id,
        campaign_id,
        params,
        attempts,
        segments,
        encoding,
        held_since,
        failure_reason,
        sent_at,
        final_at,
        address,
    ) = row
    # SQLite gives JSON as text (NULL as None); PostgreSQL's driver has decoded it.
    template_variables = (
        () if template_variables is None else tuple(codec.read_json(template_variables))
    )
    params = {} if params is None else dict(codec.read_json(params))
    outbound = _new_outbound(
        message_id=message_id,
        to=to,
        body=body,
        sender=sender_id,
        template_id=template_id,
        template_variables=template_variables,
        entity_id=entity_id,
        campaign_id=campaign_id,
        params=params,
    )
    # Positional, in field order (`_CLAIMED_FIELDS`): a third cheaper than keywords.
    claimed: ClaimedMessage = _new_claimed(
        message_id,
        connector_id,
        to,
        body,
        sender_id,
        template_id,
        template_variables,
        entity_id,
        campaign_id,
        params,
        attempts,
        segments,
        encoding,
        _STATUSES[previous_status],
        False,
        expires,
        None if held_since is None else codec.read_timestamp(held_since),
        outbound,
        None
        if lease is None
        else (
            # STATE_COLUMNS, then the address: status and lease as the claim wrote them.
            message_id,
            connector_id,
            _SENDING,
            attempts,
            held_since,
            *lease,
            failure_reason,
            sent_at,
            final_at,
            address,
        ),
    )
    return claimed


_CLAIMED_FIELDS = (
    "id",
    "connector_id",
    "to",
    "body",
    "sender_id",
    "template_id",
    "template_variables",
    "entity_id",
    "campaign_id",
    "params",
    "attempts",
    "segments",
    "encoding",
    "previous_status",
    "accepted_before",
    "lease_expires_at",
    "held_since",
    "outbound",
    "as_claimed",
)
_new_claimed = positional_builder(ClaimedMessage, _CLAIMED_FIELDS)
_STATUSES = {status.value: status for status in MessageStatus}


# ---------------------------------------------------------------- leases and deadlines


async def release_lease(db: Database, worker_id: str, *, now: datetime | None = None) -> int:
    """Put the messages a worker holds back in the queue (graceful shutdown); returns how many.

    Call it after in-flight sends are recorded: whatever is still `sending` under this
    worker was claimed but not sent.
    """
    now = now or utc_now()
    async with db.transaction() as conn:
        result = await conn.execute(
            update(messages)
            .where(messages.c.status == S.SENDING.value)
            .where(messages.c.lease_owner == worker_id)
            .values(
                status=S.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )
    return int(result.rowcount)


async def expire_unconfirmed(db: Database, *, now: datetime, limit: int = 1000) -> list[str]:
    """Mark `sent` messages whose delivery-report deadline has passed `unconfirmed`.

    Returns their ids (for webhooks). The deadline is the `next_attempt_at` given with the
    `sent` attempt record.
    """
    due = (
        select(messages.c.id)
        .where(messages.c.status == S.SENT.value)
        .where(messages.c.next_attempt_at <= now)
        .order_by(messages.c.next_attempt_at)
        .limit(limit)
    )
    if not db.is_sqlite:
        due = due.with_for_update(skip_locked=True)
    async with db.transaction() as conn:
        ids = list((await conn.execute(due)).scalars())
        if not ids:
            return []
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(ids))
            .values(
                status=S.UNCONFIRMED.value,
                next_attempt_at=None,
                final_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            insert(message_events),
            [
                {
                    "message_id": message_id,
                    "at": now,
                    "kind": "status",
                    "status": S.UNCONFIRMED.value,
                    "detail": {"from": S.SENT.value, "reason": "no final delivery report"},
                }
                for message_id in ids
            ],
        )
    return ids
