"""The dispatch side of the outbox: claim due messages in batches, record what sending did.

Claims lease messages to one worker (`sending`, with `lease_owner` and an expiry kept in
`next_attempt_at` too, so one index finds what is due whatever the status). PostgreSQL
claims with `FOR UPDATE SKIP LOCKED`, so workers on many machines never wait for or take
each other's rows; SQLite claims inside `BEGIN IMMEDIATE`. Results are written back as a
group commit: one transaction and a handful of executemany statements for many messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, exists, insert, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.store.database import AnyRow, Database, insert_ignoring_duplicates
from smsrelay.store.lifecycle import MessageStatus, can_transition
from smsrelay.store.tables import DISPATCHABLE, connectors, message_events, messages, provider_ids
from smsrelay.store.timestamps import utc_now

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

    def as_outbound(self) -> OutboundMessage:
        """The message as the connector engine renders it."""
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
)


def _is_due(now: datetime) -> Any:
    return DISPATCHABLE & (messages.c.next_attempt_at <= now)


async def due_connector_ids(db: Database, now: datetime) -> list[int]:
    """The connectors that have messages due at `now` (queued, retrying, or lease expired)."""
    # One index probe per connector, however many messages are queued.
    has_due = exists().where(messages.c.connector_id == connectors.c.id).where(_is_due(now))
    async with db.connect() as conn:
        rows = await conn.execute(select(connectors.c.id).where(has_due).order_by(connectors.c.id))
        return [int(connector_id) for connector_id in rows.scalars()]


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
    expires = now + timedelta(seconds=lease_seconds)
    lease = {
        "status": S.SENDING.value,
        "lease_owner": worker_id,
        "lease_expires_at": expires,
        "next_attempt_at": expires,
        "updated_at": now,
    }
    due = (
        select(
            messages.c.id,
            messages.c.status.label("previous_status"),
            messages.c.next_attempt_at.label("due_at"),
        )
        .where(messages.c.connector_id == connector_id)
        .where(_is_due(now))
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(limit)
    )
    async with db.transaction() as conn:
        if db.is_sqlite:
            # BEGIN IMMEDIATE holds the write lock: nothing changes between select and update.
            picked = (await conn.execute(due.add_columns(*_CLAIM_COLUMNS[1:]))).all()
            ids = [row.id for row in picked]
            for start in range(0, len(ids), _CHUNK):
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(ids[start : start + _CHUNK]))
                    .values(lease)
                )
        else:
            locked = due.with_for_update(skip_locked=True).cte("due")
            claim = (
                update(messages)
                .where(messages.c.id == locked.c.id)
                .values(lease)
                .returning(*_CLAIM_COLUMNS, locked.c.previous_status, locked.c.due_at)
            )
            picked = sorted((await conn.execute(claim)).all(), key=lambda r: (r.due_at, r.id))
        accepted = await _accepted_before(conn, picked)
    return [_claimed(row, expires, row.id in accepted) for row in picked]


async def _accepted_before(conn: AsyncConnection, picked: Sequence[AnyRow]) -> set[str]:
    # A message first claimed from `queued` with no attempts cannot have been accepted, so
    # the common case costs no query.
    suspects = [
        row.id for row in picked if row.previous_status != S.QUEUED.value or row.attempts > 0
    ]
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


def _claimed(row: AnyRow, expires: datetime, accepted_before: bool) -> ClaimedMessage:
    return ClaimedMessage(
        id=row.id,
        connector_id=row.connector_id,
        to=row.to,
        body=row.body,
        sender_id=row.sender_id,
        template_id=row.template_id,
        template_variables=tuple(row.template_variables or ()),
        entity_id=row.entity_id,
        campaign_id=row.campaign_id,
        params=dict(row.params or {}),
        attempts=row.attempts,
        segments=row.segments,
        encoding=row.encoding,
        previous_status=MessageStatus(row.previous_status),
        accepted_before=accepted_before,
        lease_expires_at=expires,
        held_since=row.held_since,
    )


# ---------------------------------------------------------------- recording attempts

AttemptOutcome = Literal["sent", "retry", "failed", "dispatch_error"]

_TARGET: dict[str, MessageStatus] = {
    "sent": S.SENT,
    "retry": S.QUEUED,
    "failed": S.FAILED,
    "dispatch_error": S.DISPATCH_ERROR,
}


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The result of one send attempt for one message.

    `next_attempt_at`: for `retry` and `dispatch_error`, when to try again (default: at
    once); for `sent`, the delivery-report deadline after which the message becomes
    `unconfirmed` (None: no report is expected). `detail` is the redacted request/response
    summary kept in the history.
    """

    message_id: str
    outcome: AttemptOutcome
    provider_ids: tuple[str, ...] = ()
    recipient: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utc_now)


_STATE_COLUMNS = (
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
_WRITTEN = (*(column.name for column in _STATE_COLUMNS[2:]), "updated_at")


class _MessageState:
    """A message's mutable columns, read under lock and changed record by record."""

    def __init__(self, row: AnyRow) -> None:
        self.id: str = row.id
        self.connector_id: int = row.connector_id
        self.values: dict[str, Any] = {name: getattr(row, name) for name in _WRITTEN[:-1]}

    @property
    def status(self) -> MessageStatus:
        return MessageStatus(self.values["status"])


def _apply(state: _MessageState, record: AttemptRecord, worker_id: str) -> list[dict[str, Any]]:
    """Change `state` by one record; returns the history events it adds."""
    values = state.values
    old = state.status
    target = _TARGET[record.outcome]
    owner = values["lease_owner"]
    # Holding for failing credentials sends nothing: not an attempt, and only the start of
    # a hold is worth a history entry (it is re-checked every couple of minutes).
    holding = target is S.DISPATCH_ERROR
    was_held = values["held_since"] is not None
    if not holding:
        values["attempts"] += 1
    values["updated_at"] = record.at
    if target is S.SENT and values["sent_at"] is None:
        values["sent_at"] = record.at
    # Only the lease holder (or nobody) may send a message back to the queue: another
    # worker that re-claimed it after our lease expired is sending it right now.
    may_requeue = owner in (worker_id, None) or target in (S.SENT, S.FAILED)
    moves = may_requeue and can_transition(old, target)
    if moves:
        values["status"] = target.value
        values["failure_reason"] = None if target is S.SENT else record.error
        values["held_since"] = (values["held_since"] or record.at) if holding else None
        if target is S.FAILED:
            values["next_attempt_at"] = None
            values["final_at"] = record.at
        elif target is S.SENT:
            values["next_attempt_at"] = record.next_attempt_at
        else:
            values["next_attempt_at"] = record.next_attempt_at or record.at
    if owner == worker_id:
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    events: list[dict[str, Any]] = []
    if not holding:
        detail: dict[str, Any] = {"attempt": values["attempts"], "outcome": record.outcome}
        if record.provider_ids:
            detail["provider_ids"] = list(record.provider_ids)
        if record.error:
            detail["error"] = record.error
        detail.update(record.detail)
        events.append(_event(state.id, record.at, "attempt", values["status"], detail))
    if moves and target is not old and not (holding and was_held):
        change: dict[str, Any] = {"from": old.value}
        if record.error and target is not S.SENT:
            change["reason"] = record.error
        if holding:
            change.update(record.detail)
        events.append(_event(state.id, record.at, "status", target.value, change))
    return events


def _event(
    message_id: str, at: datetime, kind: str, status: str | None, detail: dict[str, Any]
) -> dict[str, Any]:
    return {"message_id": message_id, "at": at, "kind": kind, "status": status, "detail": detail}


async def record_attempts(
    db: Database, records: Sequence[AttemptRecord], *, worker_id: str
) -> None:
    """Write many attempt results in one transaction (a group commit).

    Per record: attempts + 1; the status moves per the outcome where the lifecycle allows
    (a delivery report that already made the message `delivered` keeps it so, but the
    attempt and provider ids are still recorded); the lease is cleared where `worker_id`
    holds it; an `attempt` event, a `status` event per change, and provider ids are added.
    A `dispatch_error` record (held for failing credentials, nothing sent) is not an
    attempt: it sets `held_since` and adds a status event only when the hold begins.
    Records for unknown messages are ignored.
    """
    if not records:
        return
    for record in records:
        if record.outcome not in _TARGET:
            raise ValueError(f"unknown attempt outcome {record.outcome!r}")
    ids = sorted({record.message_id for record in records})
    async with db.transaction() as conn:
        states: dict[str, _MessageState] = {}
        for start in range(0, len(ids), _CHUNK):
            # Locking in id order keeps concurrent group commits from deadlocking.
            query = (
                select(*_STATE_COLUMNS)
                .where(messages.c.id.in_(ids[start : start + _CHUNK]))
                .order_by(messages.c.id)
                .with_for_update()
            )
            for row in await conn.execute(query):
                states[row.id] = _MessageState(row)
        events: list[dict[str, Any]] = []
        new_provider_ids: list[dict[str, Any]] = []
        for record in records:
            state = states.get(record.message_id)
            if state is None:
                continue
            events.extend(_apply(state, record, worker_id))
            new_provider_ids.extend(
                {
                    "connector_id": state.connector_id,
                    "provider_id": provider_id,
                    "message_id": state.id,
                    "recipient": record.recipient,
                }
                for provider_id in dict.fromkeys(record.provider_ids)
            )
        if not states:
            return
        await conn.execute(_UPDATE_STATE, [_bind(state) for state in states.values()])
        if events:
            await conn.execute(insert(message_events), events)
        if new_provider_ids:
            await conn.execute(insert_ignoring_duplicates(db, provider_ids), new_provider_ids)


_UPDATE_STATE = (
    update(messages)
    .where(messages.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=messages.c[name].type) for name in _WRITTEN})
)


def _bind(state: _MessageState) -> dict[str, Any]:
    return {"b_id": state.id, **{f"b_{name}": state.values[name] for name in _WRITTEN}}


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
