"""The dispatch side of the outbox: claim due messages in batches, record what sending did.

Claims lease messages to one worker (`sending`, with `lease_owner` and an expiry kept in
`next_attempt_at` too, so one index finds what is due whatever the status). PostgreSQL
claims with `FOR UPDATE SKIP LOCKED`, so workers on many machines never wait for or take
each other's rows; SQLite claims inside `BEGIN IMMEDIATE`. Results are written back as a
group commit: one transaction and a handful of statements for many messages.

On SQLite in a file both run on the writer thread (`Database.write_at_once`), and a group
commit works its changes out before it takes the writer turn, from states read without
it, then writes each row only where it is still as read (`record_attempts`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    exists,
    insert,
    literal_column,
    select,
    true,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.store.bulk_sql import (
    Codec,
    DriverStatement,
    id_list_condition,
    id_list_rows,
    json_rows,
    typed_parameter,
)
from smsrelay.store.connector_groups import Failover, failover_routes
from smsrelay.store.database import Database, Dialect
from smsrelay.store.lifecycle import MessageStatus, can_transition
from smsrelay.store.tables import (
    DISPATCHABLE,
    connectors,
    message_events,
    messages,
    provider_ids,
    send_exchanges,
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
)

# A claim row: id, previous status, due at, then _CLAIM_COLUMNS[1:] (see `_claimed`).
_ATTEMPTS_AT = 2 + [column.name for column in _CLAIM_COLUMNS].index("attempts")
_QUEUED = S.QUEUED.value


def _is_due(now: datetime) -> Any:
    return DISPATCHABLE & (messages.c.next_attempt_at <= now)


async def due_connector_ids(db: Database, now: datetime) -> list[int]:
    """The connectors that have messages due at `now` (queued, retrying, or lease expired)."""
    # One index probe per connector, however many messages are queued.
    has_due = exists().where(messages.c.connector_id == connectors.c.id).where(_is_due(now))
    async with db.connect() as conn:
        rows = await conn.execute(select(connectors.c.id).where(has_due).order_by(connectors.c.id))
        return [int(connector_id) for connector_id in rows.scalars()]


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


def _address(dialect: Dialect) -> Any:
    """The column a message is updated by once found: SQLite's rowid (the string primary
    key would take one more index search per row), PostgreSQL's primary key."""
    return literal_column("messages.rowid") if dialect == "sqlite" else messages.c.id


# Compiled once per dialect (store.bulk_sql): a claim is three statements whatever its size.
# SQLite only: each row ends with its rowid, which the lease is written by.
_SELECT_DUE = DriverStatement(
    lambda d: _due_selection(d).add_columns(*_CLAIM_COLUMNS[1:], _address(d).label("address")),
    packed=True,
)
_LEASE_PICKED = DriverStatement(
    lambda d: update(messages).where(id_list_condition(_address(d), "ids", d)).values(_LEASE_VALUES)
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
    claimed = [_claimed(row, codec, expires) for row in picked]
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


def _builder(cls: type[Any]) -> Callable[..., Any]:
    """A constructor of a frozen slots dataclass (its fields in order) without `__init__`.

    A frozen dataclass sets each field through `object.__setattr__`, which made building a
    claim's messages (two objects, 27 fields, per row) cost more than reading the rows. This
    sets the slots directly; defaults and default factories apply as in `__init__`.
    """
    fields = dataclasses.fields(cls)
    if hasattr(cls, "__post_init__") or not all(f.name in cls.__slots__ for f in fields):
        raise TypeError(f"{cls.__name__} is not a slots dataclass without __post_init__")
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls, "MISSING": dataclasses.MISSING}
    params, body = [], []
    for n, f in enumerate(fields):
        scope[f"set{n}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            scope[f"default{n}"] = f.default
            params.append(f"{f.name}=default{n}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"factory{n}"] = f.default_factory
            params.append(f"{f.name}=MISSING")
            body.append(f" if {f.name} is MISSING: {f.name} = factory{n}()")
        else:
            params.append(f.name)
        body.append(f" set{n}(obj, {f.name})")
    source = f"def build({', '.join(params)}):\n obj = new(cls)\n" + "\n".join(body)
    exec(source + "\n return obj\n", scope)
    build: Callable[..., Any] = scope["build"]
    return build


_new_outbound = _builder(OutboundMessage)
_new_claimed = _builder(ClaimedMessage)


def _claimed(row: tuple[Any, ...], codec: Codec, expires: datetime) -> ClaimedMessage:
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
        _row_address,
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
    # Positional, in field order (checked below _claimed): a third cheaper than keywords.
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
)
if tuple(f.name for f in dataclasses.fields(ClaimedMessage)) != _CLAIMED_FIELDS:
    raise TypeError("ClaimedMessage's fields changed: update _claimed")
_STATUSES = {status.value: status for status in MessageStatus}


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
# `connector_id` is written too: failover moves a message to the next connector of its group.
_WRITTEN = ("connector_id", *(column.name for column in _STATE_COLUMNS[2:]), "updated_at")


_STATE_NAMES = tuple(column.name for column in _STATE_COLUMNS)
_STATE_TIMESTAMPS = frozenset(
    name for name in _WRITTEN if isinstance(messages.c[name].type, UTCDateTime)
)
# A group commit writes rows that differ only in their message id (a batch's messages,
# all sent at one instant) with one statement over the id list instead of one per row.
_SAME_VALUES_MIN = 4
_EVENT_FIELDS = ("message_id", "at", "kind", "status", "detail", "exchange_id")


class _MessageState:
    """A message's mutable columns, read under lock and changed record by record.

    Timestamps stay in the driver's form (SQLite text) unless a record sets them: most are
    written back untouched, and only their presence is ever tested.

    `key` identifies the values (the row as read, or the values a shared effect left) while
    they are shared with other messages: `_own` gives the message a copy before it is changed
    on its own. The values dict is only built when asked for.
    """

    __slots__ = ("_codec", "_values", "address", "connector_id", "id", "key", "read")

    def __init__(self, row: tuple[Any, ...], codec: Codec) -> None:
        # _LOCK_STATES: the _STATE_COLUMNS, then the row's address (see `_address`).
        self.id: str = row[0]
        self.connector_id: int = row[1]
        # The values as read, in the driver's form (what a checked write compares).
        self.read: tuple[Any, ...] = row[1:-1]
        self.key: tuple[Any, ...] | None = self.read
        self.address: Any = row[-1]
        self._values: dict[str, Any] | None = None
        self._codec = codec

    @property
    def values(self) -> dict[str, Any]:
        values = self._values
        if values is None:
            assert self.key is not None
            values = self._values = dict(zip(_STATE_NAMES[1:], self.key, strict=True))
            if not self._codec.sqlite:
                for name in _STATE_TIMESTAMPS:
                    if values.get(name) is not None:
                        values[name] = self._codec.read_timestamp(values[name])
        return values

    @property
    def status(self) -> MessageStatus:
        return _STATUSES[self.values["status"]]

    def _own(self) -> _MessageState:
        """This state with values of its own, to be changed in place."""
        if self.key is not None:
            self._values = dict(self.values)
            self.key = None
        return self

    def _copy(self) -> _MessageState:
        copy = _MessageState.__new__(_MessageState)
        copy.id, copy.connector_id, copy.address = self.id, self.connector_id, self.address
        copy.key, copy._codec, copy.read = None, self._codec, self.read
        copy._values = dict(self.values)
        return copy


@dataclass(slots=True)
class _Effect:
    """What a record did to a message, for every other message in the same state with an
    equivalent record (one request's messages): new values shared, events as templates."""

    key: tuple[Any, ...]
    values: dict[str, Any]
    # (event, attempt detail or None): copied per message, the message id put in.
    templates: tuple[tuple[dict[str, Any], dict[str, Any] | None], ...]

    def events(self, message_id: str, found_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        made = []
        for template, attempt in self.templates:
            event = template.copy()
            event["message_id"] = message_id
            if attempt is not None:
                detail = event["detail"] = attempt.copy()
                if found_ids:
                    detail["provider_ids"] = list(found_ids)
            made.append(event)
        return made


def _shared_effect(
    state: _MessageState, record: AttemptRecord, worker_id: str
) -> tuple[_Effect, list[dict[str, Any]]]:
    """`_apply` (shared trace, no failover) on a copy of `state`: the effect and its events."""
    changed = state._copy()
    events = _apply(changed, record, worker_id, None, shared=True)
    values = changed.values
    templates = tuple(
        (dict(event), dict(event["detail"]) if event["kind"] == "attempt" else None)
        for event in events
    )
    return _Effect(tuple(values.values()), values, templates), events


def _fails_over(
    state: _MessageState, record: AttemptRecord, worker_id: str, failover: Failover
) -> bool:
    """Whether a failed attempt moves the message on to another connector instead."""
    return (
        record.outcome == "failed"
        and failover.from_id == state.values["connector_id"]
        and state.values["lease_owner"] in (worker_id, None)
        and can_transition(state.status, S.QUEUED)
    )


def _fail_over(
    state: _MessageState, record: AttemptRecord, failover: Failover, *, shared: bool = False
) -> list[dict[str, Any]]:
    """Queue a message that failed on one connector for the next one of its group.

    Its attempts restart at 0 for the new connector; the history shows the failed attempt
    and a status event `failover from A to B: reason`.
    """
    values = state.values
    old = state.status
    note = failover.note(record.error)
    attempt: dict[str, Any] = {
        "attempt": values["attempts"] + 1,
        "outcome": record.outcome,
        "connector": failover.from_name,
    }
    if record.error:
        attempt["error"] = record.error
    if not shared:
        attempt.update(record.detail)
    values.update(
        connector_id=failover.to_id,
        attempts=0,
        status=S.QUEUED.value,
        failure_reason=None,
        held_since=None,
        next_attempt_at=record.at,
        lease_owner=None,
        lease_expires_at=None,
        updated_at=record.at,
    )
    change = {
        "from": old.value,
        "reason": note,
        "failover": {
            "group": failover.group,
            "from": failover.from_name,
            "to": failover.to_name,
            "error": record.error,
        },
    }
    return [
        _event(state.id, record.at, "attempt", S.QUEUED.value, attempt),
        _event(state.id, record.at, "status", S.QUEUED.value, change),
    ]


def _apply(
    state: _MessageState,
    record: AttemptRecord,
    worker_id: str,
    failover: Failover | None = None,
    *,
    shared: bool = False,
) -> list[dict[str, Any]]:
    """Change `state` by one record; returns the history events it adds.

    With `failover` (the next connector of the message's group), a failed attempt queues
    the message for that connector instead of failing it. With `shared`, the record's
    detail (the request's trace) is left out of the attempt event: it is stored once for
    the whole request.
    """
    if failover is not None and _fails_over(state, record, worker_id, failover):
        return _fail_over(state, record, failover, shared=shared)
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
        if not shared:
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
    return {
        "message_id": message_id,
        "at": at,
        "kind": kind,
        "status": status,
        "detail": detail,
        "exchange_id": None,
    }


@dataclass(slots=True, eq=False)
class _Exchange:
    """One request's trace shared by several messages, and their own attempt parts."""

    at: datetime
    detail: Mapping[str, Any]
    attempts: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_id: int | None = None


def _share(events: list[dict[str, Any]], exchange: _Exchange) -> list[dict[str, Any]]:
    """Point a message's events of a shared request at the exchange that stores its trace.

    An attempt followed by the status change it caused (the usual case) becomes the status
    event alone, which carries the exchange; the attempt's own part goes in the exchange's
    `attempts` map and `get_message` shows the attempt entry just before the status entry,
    as if it had been stored. Any other attempt event keeps its own row and points to the
    exchange for the trace.
    """
    if (
        len(events) == 2
        and events[0]["kind"] == "attempt"
        and events[1]["kind"] == "status"
        and events[0]["message_id"] not in exchange.attempts
    ):
        attempt, change = events
        exchange.attempts[attempt["message_id"]] = attempt["detail"]
        change["shared"] = exchange
        return [change]
    for event in events:
        if event["kind"] == "attempt":
            event["shared"] = exchange
    return events


class _RowsChanged(Exception):
    """A message row changed between the unlocked read and the write (SQLite)."""


@dataclass(slots=True)
class _Writes:
    """What one group commit writes, worked out from the message states it read."""

    # Rows sharing their new values (and their values as read): one statement each.
    state_groups: list[tuple[tuple[Any, ...], tuple[Any, ...], list[Any]]]
    # Every other row: (id, *new values, *values as read), for one executemany.
    state_rows: list[tuple[Any, ...]]
    exchanges: list[_Exchange]
    # Rounds of events (see `_event_rounds`); an event's exchange is set once it is stored.
    event_rounds: list[_EventRound]
    provider_ids: list[tuple[Any, ...]]
    count: int


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
    A `failed` record of a message whose sender points to a connector group, failing on a
    connector that has a next one in the group, queues the message for that connector
    instead (attempts restarted; see `store.connector_groups`).
    Records for unknown messages are ignored.

    SQLite has one writer at a time, so the states are read and every change worked out
    before the write transaction, which then writes each row only where it is still as
    read. If one is not (a delivery report or another worker got there in between),
    nothing is written and the whole group is done again under the write lock, as
    PostgreSQL always does it (row locks there hold up nobody else).
    """
    if not records:
        return
    for record in records:
        if record.outcome not in _TARGET:
            raise ValueError(f"unknown attempt outcome {record.outcome!r}")
    ids = sorted({record.message_id for record in records})
    codec = Codec(db)
    if db.writes_at_once:
        async with db.connect() as conn:
            writes = await _work_out(conn, db, codec, records, ids, worker_id)
        if writes is None:
            return
        try:
            await db.write_at_once(functools.partial(_write_now, db=db, codec=codec, writes=writes))
            return
        except _RowsChanged:
            pass  # rolled back: done again below, on the states as they are now
    async with db.transaction() as conn:
        writes = await _work_out(conn, db, codec, records, ids, worker_id)
        if writes is not None:
            await _write(conn, db, codec, writes)


async def _work_out(
    conn: AsyncConnection,
    db: Database,
    codec: Codec,
    records: Sequence[AttemptRecord],
    ids: Sequence[str],
    worker_id: str,
) -> _Writes | None:
    """Read the messages' states and work out what the records do (None: no message found).

    On a write transaction the rows are locked (PostgreSQL, in id order, which keeps
    concurrent group commits from deadlocking); on a read connection they are not.
    """
    states: dict[str, _MessageState] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = await _LOCK_STATES.fetch(conn, db, {"ids": _id_list(db, chunk)})
        for row in rows:
            locked = _MessageState(row, codec)
            states[locked.id] = locked
    if not states:
        return None
    failing = sorted({r.message_id for r in records if r.outcome == "failed"} & set(states))
    routes = await failover_routes(conn, failing) if failing else {}
    exchanges = {key: _Exchange(at, detail) for key, (at, detail) in _shared(records).items()}
    events: list[dict[str, Any]] = []
    new_provider_ids: list[tuple[Any, ...]] = []
    # The messages of one request are in one state and get equivalent records: the
    # effect is worked out once per (state, record) and shared.
    effects: dict[tuple[Any, ...], _Effect] = {}
    for record in records:
        state = states.get(record.message_id)
        if state is None:
            continue
        exchange = exchanges.get(id(record.detail)) if exchanges else None
        # A message's connector may change (failover): its route is good for one failure.
        route = routes.pop(record.message_id, None) if routes else None
        if exchange is None:
            events.extend(_apply(state._own(), record, worker_id, route))
        elif route is None and state.key is not None:
            # The request's trace is stored once, in its exchange row; a shared record's
            # own detail is not used, its provider ids only in the attempt detail.
            effect_key = (
                state.key,
                record.outcome,
                record.at,
                record.next_attempt_at,
                record.error,
                not record.provider_ids,
            )
            effect = effects.get(effect_key)
            if effect is None:
                effect, made = _shared_effect(state, record, worker_id)
                effects[effect_key] = effect
            else:
                made = effect.events(state.id, record.provider_ids)
            state.key, state._values = effect.key, effect.values
            events.extend(_share(made, exchange))
        else:
            events.extend(
                _share(_apply(state._own(), record, worker_id, route, shared=True), exchange)
            )
        found_ids = record.provider_ids
        if found_ids:
            if len(found_ids) == 1:
                new_provider_ids.append(
                    (state.connector_id, found_ids[0], state.id, record.recipient)
                )
            else:
                new_provider_ids.extend(
                    (state.connector_id, provider_id, state.id, record.recipient)
                    for provider_id in dict.fromkeys(found_ids)
                )
    for event in events:
        event["at"] = codec.timestamp(event["at"])
        event["detail"] = _detail_json(event["detail"])
    state_groups, state_rows = _state_writes(codec, states.values())
    return _Writes(
        state_groups=state_groups,
        state_rows=state_rows,
        exchanges=list(exchanges.values()),
        event_rounds=_event_rounds(events),
        provider_ids=new_provider_ids,
        count=len(states),
    )


# One statement of a group commit: (statement, values) run once, or (statement, names,
# rows) run over many rows. The runner sends back the rows changed and the first row given.
_Step = (
    tuple[DriverStatement, Mapping[str, Any]]
    | tuple[DriverStatement, Sequence[str], Sequence[tuple[Any, ...]]]
)


def _write_steps(
    db: Database, codec: Codec, writes: _Writes, *, checked: bool
) -> Generator[_Step, tuple[int, Any], None]:
    """The statements that write what `_work_out` found, in order. With `checked`, rows
    are only written where still as read, else `_RowsChanged` is raised (and the caller's
    transaction rolls back)."""
    written = 0
    for row, read, addresses in writes.state_groups:
        values = dict(zip(_BOUND_NAMES, row, strict=True))
        values["ids"] = _id_list(db, addresses)
        if checked:
            values.update(zip(_READ_NAMES, read, strict=True))
            written += (yield (_UPDATE_STATES_IF_UNCHANGED, values))[0]
        else:
            yield (_UPDATE_STATES, values)
    if checked:
        single = _UPDATE_STATE_IF_UNCHANGED
        written += (yield (single, _CHECKED_ROW_NAMES, writes.state_rows))[0]
        if written != writes.count:
            raise _RowsChanged
    else:
        yield (_UPDATE_STATE, _CHECKED_ROW_NAMES, writes.state_rows)
    for exchange in writes.exchanges:
        values = {
            "at": codec.timestamp(exchange.at),
            "detail": Codec.json(exchange.detail),
            "attempts": Codec.json(exchange.attempts or None),
        }
        exchange.row_id = int((yield (_INSERT_EXCHANGE, values))[1][0])
    for same, single_events in writes.event_rounds:
        for (at, kind, status, detail, exchange), message_ids in same.items():
            values = {
                "at": at,
                "kind": kind,
                "status": status,
                "detail": detail,
                "exchange_id": None if exchange is None else exchange.row_id,
                "ids": _id_list(db, message_ids),
            }
            yield (_INSERT_EVENTS, values)
        if any(row[-1] is not None for row in single_events):
            single_events = [
                row if row[-1] is None else (*row[:-1], row[-1].row_id) for row in single_events
            ]
        yield (_INSERT_EVENT, _EVENT_FIELDS, single_events)
    yield (_INSERT_PROVIDER_ID, _PROVIDER_ID_FIELDS, writes.provider_ids)


def _write_now(conn: sqlite3.Connection, *, db: Database, codec: Codec, writes: _Writes) -> None:
    """`_write_steps`, checked, on the SQLite writer thread (`Database.write_at_once`)."""
    steps = _write_steps(db, codec, writes, checked=True)
    try:
        step = next(steps)
        while True:
            if len(step) == 2:
                answer = step[0].execute_returning_now(conn, db, step[1])
            else:
                answer = (step[0].execute_rows_now(conn, db, step[1], step[2]), None)
            step = steps.send(answer)
    except StopIteration:
        pass


async def _write(conn: AsyncConnection, db: Database, codec: Codec, writes: _Writes) -> None:
    """`_write_steps`, unchecked, on a write transaction that holds the rows."""
    steps = _write_steps(db, codec, writes, checked=False)
    try:
        step = next(steps)
        while True:
            if len(step) == 2:
                answer = await step[0].execute_returning(conn, db, step[1])
            else:
                answer = (await step[0].execute_rows(conn, db, step[1], step[2]), None)
            step = steps.send(answer)
    except StopIteration:
        pass


def _shared(records: Sequence[AttemptRecord]) -> dict[int, tuple[datetime, Mapping[str, Any]]]:
    """Attempt details that several records share (one request carried their messages).

    Keyed by identity: `records_for_exchange` gives every message of one request the same
    detail object. A held (`dispatch_error`) record's detail goes in its status event, so
    it is never shared.
    """
    seen: set[int] = set()
    shared: dict[int, tuple[datetime, Mapping[str, Any]]] = {}
    for record in records:
        if record.outcome == "dispatch_error" or not record.detail:
            continue
        key = id(record.detail)
        if key in seen:
            shared.setdefault(key, (record.at, record.detail))
        else:
            seen.add(key)
    return shared


# Status changes repeat the same few small details ({"from": "sending"}) many times.
_FROM_ONLY: dict[str, str] = {}


def _detail_json(detail: Mapping[str, Any] | None) -> str | None:
    if detail is not None and len(detail) == 1:
        old = detail.get("from")
        if isinstance(old, str):
            text = _FROM_ONLY.get(old)
            if text is None:
                text = _FROM_ONLY[old] = json.dumps(detail)
            return text
    return Codec.json(detail)


def _state_writes(
    codec: Codec, states: Iterable[_MessageState]
) -> tuple[list[tuple[tuple[Any, ...], tuple[Any, ...], list[Any]]], list[tuple[Any, ...]]]:
    """The changed states as rows to write: (new values, values as read, addresses) for each
    set of at least `_SAME_VALUES_MIN` identical rows, else (id, *new values, *as read)."""
    same: dict[tuple[Any, ...], list[_MessageState]] = {}
    # States that share their values (a request's messages) share their row.
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for state in states:
        key = state.key
        row = rows.get(key) if key is not None else None
        if row is None:
            values = state.values
            row = tuple(
                codec.timestamp(values[name])
                if name in _STATE_TIMESTAMPS and isinstance(values[name], datetime)
                else values[name]
                for name in _WRITTEN
            )
            if key is not None:
                rows[key] = row
        same.setdefault((row, state.read), []).append(state)
    groups: list[tuple[tuple[Any, ...], tuple[Any, ...], list[Any]]] = []
    single: list[tuple[Any, ...]] = []
    for (row, read), group in same.items():
        if len(group) >= _SAME_VALUES_MIN:
            groups.append((row, read, [state.address for state in group]))
        else:
            single.extend((state.id, *row, *read) for state in group)
    return groups, single


# A round of events (see `_event_rounds`): identical events but for the message, by their
# values (at, kind, status, detail, exchange), and the rest one by one.
_EventRound = tuple[dict[tuple[Any, ...], list[str]], list[tuple[Any, ...]]]


def _event_rounds(events: Sequence[dict[str, Any]]) -> list[_EventRound]:
    """Events in rounds (every message's first event, then every second one...), so that
    within a message ids still follow the order the events happened in; identical ones
    (but for the message) go in one statement."""
    rounds: list[list[dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for event in events:
        message_id = event["message_id"]
        n = seen.get(message_id, 0)
        seen[message_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(event)
    grouped: list[_EventRound] = []
    for batch in rounds:
        same: dict[tuple[Any, ...], list[str]] = {}
        for event in batch:
            key = (
                event["at"],
                event["kind"],
                event["status"],
                event["detail"],
                event.get("shared"),
            )
            same.setdefault(key, []).append(event["message_id"])
        single: list[tuple[Any, ...]] = []
        for key, message_ids in list(same.items()):
            if len(message_ids) < _SAME_VALUES_MIN:
                del same[key]
                single.extend((message_id, *key) for message_id in message_ids)
        grouped.append((same, single))
    return grouped


def _id_list(db: Database, ids: Sequence[Any]) -> Any:
    # One bound parameter for a whole list (store.bulk_sql.id_list_condition).
    return json.dumps(list(ids)) if db.is_sqlite else list(ids)


_LOCK_STATES = DriverStatement(
    lambda d: (
        select(*_STATE_COLUMNS, _address(d).label("address"))
        .where(id_list_condition(messages.c.id, "ids", d))
        .order_by(messages.c.id)
        .with_for_update()
    ),
    packed=True,
)
_BOUND_NAMES = tuple(f"b_{name}" for name in _WRITTEN)
_STATE_VALUES = {name: bindparam(f"b_{name}", type_=messages.c[name].type) for name in _WRITTEN}
_STATE_ROW_NAMES = ("b_id", *_BOUND_NAMES)


def _update_state(dialect: Dialect) -> Any:
    if dialect == "sqlite":
        _rows, value = json_rows(_STATE_ROW_NAMES)
        return (
            update(messages)
            .where(messages.c.id == value["b_id"])
            .values({name: value[f"b_{name}"] for name in _WRITTEN})
        )
    return update(messages).where(messages.c.id == bindparam("b_id")).values(_STATE_VALUES)


_UPDATE_STATE = DriverStatement(_update_state, many=True, json_rows=_STATE_ROW_NAMES)
_UPDATE_STATES = DriverStatement(
    lambda d: update(messages).where(id_list_condition(_address(d), "ids", d)).values(_STATE_VALUES)
)
# The same, only over rows whose state is still as read (`_MessageState.read`): SQLite's
# group commits read outside the write transaction (`record_attempts`).
_READ_NAMES = tuple(f"o_{name}" for name in _STATE_NAMES[1:])


def _as_read(value: Callable[[str], Any]) -> Any:
    """Every state column `IS` its value as read (`value(name)`, e.g. a bound parameter)."""
    return and_(
        *(messages.c[name].is_not_distinct_from(value(f"o_{name}")) for name in _STATE_NAMES[1:])
    )


_CHECKED_ROW_NAMES = ("b_id", *_BOUND_NAMES, *_READ_NAMES)


def _update_state_if_unchanged(_dialect: Dialect) -> Any:
    # Checked writes are SQLite's only (`record_attempts`).
    _rows, value = json_rows(_CHECKED_ROW_NAMES)
    return (
        update(messages)
        .where(messages.c.id == value["b_id"], _as_read(value.__getitem__))
        .values({name: value[f"b_{name}"] for name in _WRITTEN})
    )


_UPDATE_STATE_IF_UNCHANGED = DriverStatement(
    _update_state_if_unchanged, many=True, json_rows=_CHECKED_ROW_NAMES
)
_INSERT_EXCHANGE = DriverStatement(
    lambda _d: (
        insert(send_exchanges)
        .values(at=bindparam("at"), detail=bindparam("detail"), attempts=bindparam("attempts"))
        .returning(send_exchanges.c.id)
    )
)
_UPDATE_STATES_IF_UNCHANGED = DriverStatement(
    lambda d: (
        update(messages)
        .where(id_list_condition(_address(d), "ids", d), _as_read(bindparam))
        .values(_STATE_VALUES)
    )
)


def _insert_event(dialect: Dialect) -> Any:
    if dialect == "sqlite":
        rows, value = json_rows(_EVENT_FIELDS)
        return insert(message_events).from_select(
            list(_EVENT_FIELDS), select(*(value[name] for name in _EVENT_FIELDS)).select_from(rows)
        )
    return insert(message_events)


_INSERT_EVENT = DriverStatement(
    _insert_event, list(_EVENT_FIELDS), many=True, json_rows=_EVENT_FIELDS
)


def _insert_same_events(dialect: Dialect) -> Any:
    listed = id_list_rows("ids", dialect)
    columns = message_events.c
    return insert(message_events).from_select(
        ["message_id", "at", "kind", "status", "detail", "exchange_id"],
        select(
            listed.c.value,
            *(
                typed_parameter(name, columns[name].type, dialect)
                for name in ("at", "kind", "status", "detail", "exchange_id")
            ),
        ).select_from(listed),
    )


_INSERT_EVENTS = DriverStatement(_insert_same_events)
_PROVIDER_ID_FIELDS = ("connector_id", "provider_id", "message_id", "recipient")


def _insert_provider_id(dialect: Dialect) -> Any:
    if dialect == "sqlite":
        rows, value = json_rows(_PROVIDER_ID_FIELDS)
        picked = select(*(value[name] for name in _PROVIDER_ID_FIELDS)).select_from(rows)
        # `WHERE true`: SQLite reads `ON CONFLICT` after a bare `FROM` as a join's.
        return (
            sqlite_insert(provider_ids)
            .from_select(list(_PROVIDER_ID_FIELDS), picked.where(true()))
            .on_conflict_do_nothing()
        )
    return postgresql_insert(provider_ids).on_conflict_do_nothing()


_INSERT_PROVIDER_ID = DriverStatement(
    _insert_provider_id,
    list(_PROVIDER_ID_FIELDS),
    many=True,
    json_rows=_PROVIDER_ID_FIELDS,
)


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
