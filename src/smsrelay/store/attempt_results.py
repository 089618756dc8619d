"""Recording what sending did: many attempt results written back in one group commit.

`record_attempts` reads the messages' states, works out each record's effect (the status
per the lifecycle, the lease, attempts, a failover to the next connector of a group, the
history events and provider ids) and writes them in one transaction with a handful of
statements, whatever the number of messages. The messages of one request share one
effect, worked out once, and their request's trace is stored once (`send_exchanges`).

On SQLite in a file the effects are worked out before the writer turn, from states read
without it, and written on the writer thread (`Database.write_at_once`) only over rows
still as read; PostgreSQL works them out on rows it has locked.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, bindparam, insert, select, true, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

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
from smsrelay.store.outbox import STATE_COLUMNS, row_address
from smsrelay.store.tables import message_events, messages, provider_ids, send_exchanges
from smsrelay.store.timestamps import UTCDateTime, utc_now

S = MessageStatus
_CHUNK = 1000
_STATUSES = {status.value: status for status in MessageStatus}
# Each status's stored text: an enum's `.value` is a property, slow on a hot path.
_VALUES = {status: status.value for status in MessageStatus}


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
    # The message's row as its claim left it (`ClaimedMessage.as_claimed`), if known.
    as_claimed: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)


# `connector_id` is written too: failover moves a message to the next connector of its group.
_WRITTEN = ("connector_id", *(column.name for column in STATE_COLUMNS[2:]), "updated_at")


_STATE_NAMES = tuple(column.name for column in STATE_COLUMNS)
_STATE_TIMESTAMPS = frozenset(
    name for name in _WRITTEN if isinstance(messages.c[name].type, UTCDateTime)
)
# A state's values in `_WRITTEN` order, and where the timestamps are among them.
_WRITTEN_VALUES = operator.itemgetter(*_WRITTEN)
_WRITTEN_TIMESTAMPS = tuple(i for i, name in enumerate(_WRITTEN) if name in _STATE_TIMESTAMPS)
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
        # _LOCK_STATES: the STATE_COLUMNS, then the row's address (`outbox.row_address`).
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
            # Values not built yet are built for this state alone; built ones may be shared.
            shared = self._values
            self._values = self.values if shared is None else dict(shared)
            self.key = None
        return self

    def _copy(self) -> _MessageState:
        copy = _MessageState.__new__(_MessageState)
        copy.id, copy.connector_id, copy.address = self.id, self.connector_id, self.address
        copy.key, copy._codec, copy.read = None, self._codec, self.read
        copy._values = dict(self.values)
        return copy


@dataclass(slots=True, eq=False)
class _Effect:
    """What a record did to a message, for every other message in the same state with an
    equivalent record (one request's messages): new values shared, events as templates."""

    key: tuple[Any, ...]
    values: dict[str, Any]
    # (event, attempt detail or None): copied per message, the message id put in.
    templates: tuple[tuple[dict[str, Any], dict[str, Any] | None], ...]

    @property
    def attempt_then_status(self) -> bool:
        """Whether a message's events are an attempt and the status change it caused: in a
        shared request, the status event alone, the attempt's part kept in the exchange."""
        return (
            len(self.templates) == 2
            and self.templates[0][1] is not None
            and self.templates[1][0]["kind"] == "status"
        )

    def attempt_part(self, found_ids: tuple[str, ...]) -> dict[str, Any]:
        """A message's own part of its attempt event (`attempt_then_status` effects)."""
        attempt = self.templates[0][1]
        assert attempt is not None
        return _with_ids(attempt, found_ids)

    def events(self, message_id: str, found_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        made = []
        for template, attempt in self.templates:
            event = template.copy()
            event["message_id"] = message_id
            if attempt is not None:
                event["detail"] = _with_ids(attempt, found_ids)
            made.append(event)
        return made


def _with_ids(attempt: dict[str, Any], found_ids: tuple[str, ...]) -> dict[str, Any]:
    """A copy of an attempt template's detail, with the message's own provider ids."""
    detail = attempt.copy()
    if found_ids:
        detail["provider_ids"] = list(found_ids)
    return detail


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
        values["status"] = _VALUES[target]
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
        change: dict[str, Any] = {"from": _VALUES[old]}
        if record.error and target is not S.SENT:
            change["reason"] = record.error
        if holding:
            change.update(record.detail)
        events.append(_event(state.id, record.at, "status", _VALUES[target], change))
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

    The same as `write_attempts(db, await plan_attempts(db, records, ...))`; a caller that
    writes group after group plans the next one while the one before it is written.
    """
    await write_attempts(db, await plan_attempts(db, records, worker_id=worker_id))


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """A group of attempt records and, on SQLite, the writes worked out for them
    (`plan_attempts`); `write_attempts` stores it."""

    records: Sequence[AttemptRecord]
    worker_id: str
    # SQLite in a file: what the records write, from the states as read (None: none of
    # their messages exists). Elsewhere not worked out ahead: `unplanned`.
    writes: _Writes | None
    unplanned: bool


async def plan_attempts(
    db: Database, records: Sequence[AttemptRecord], *, worker_id: str
) -> AttemptPlan:
    """Read the records' messages and work out what they write, without writing (SQLite).

    SQLite has one writer at a time, so the states are read on a read connection and every
    change is worked out before the write transaction; `write_attempts` then writes each
    row only where it is still as read. On PostgreSQL nothing is read here: the states are
    read under row locks in the write transaction (row locks hold up nobody else).
    """
    for record in records:
        if record.outcome not in _TARGET:
            raise ValueError(f"unknown attempt outcome {record.outcome!r}")
    if not records or not db.writes_at_once:
        return AttemptPlan(records, worker_id, None, unplanned=bool(records))
    ids = sorted({record.message_id for record in records})
    # A message whose row is known as its claim left it is not read: the write checks it.
    as_claimed = {r.message_id: r.as_claimed for r in records if r.as_claimed is not None}
    if len(as_claimed) == len(ids) and not any(r.outcome == "failed" for r in records):
        # Nothing to read (a failure may read its connector group's next connector).
        writes = await _work_out(None, db, Codec(db), records, ids, worker_id, as_claimed)
    else:
        async with db.connect() as conn:
            writes = await _work_out(conn, db, Codec(db), records, ids, worker_id, as_claimed)
    return AttemptPlan(records, worker_id, writes, unplanned=False)


async def write_attempts(db: Database, plan: AttemptPlan) -> None:
    """Store a planned group of records in one transaction (see `record_attempts`).

    A SQLite plan is written on the writer thread where every row is still as it was read.
    If one is not (a delivery report or another worker got there in between), nothing is
    written and the whole group is done again under the write lock, on the states as they
    are now, as PostgreSQL always does it.
    """
    codec = Codec(db)
    if plan.writes is not None:
        try:
            work = functools.partial(_write_now, db=db, codec=codec, writes=plan.writes)
            await db.write_at_once(work)
            return
        except _RowsChanged:
            pass  # rolled back: done again below
    elif not plan.unplanned:
        return  # nothing to write: none of the messages exists
    ids = sorted({record.message_id for record in plan.records})
    async with db.transaction() as conn:
        writes = await _work_out(conn, db, codec, plan.records, ids, plan.worker_id)
        if writes is not None:
            await _write(conn, db, codec, writes)


async def _work_out(
    conn: AsyncConnection | None,
    db: Database,
    codec: Codec,
    records: Sequence[AttemptRecord],
    ids: Sequence[str],
    worker_id: str,
    as_claimed: Mapping[str, tuple[Any, ...]] | None = None,
) -> _Writes | None:
    """Read the messages' states and work out what the records do (None: no message found).

    On a write transaction the rows are locked (PostgreSQL, in id order, which keeps
    concurrent group commits from deadlocking); on a read connection they are not.
    Messages in `as_claimed` (rows as their claims left them) are taken as they are there,
    not read: only for a write that checks them. `conn` may be None when every message is
    in `as_claimed` and no record failed.
    """
    states: dict[str, _MessageState] = {}
    unread = ids
    if as_claimed:
        for message_id, row in as_claimed.items():
            states[message_id] = _MessageState(row, codec)
        unread = [message_id for message_id in ids if message_id not in as_claimed]
    for start in range(0, len(unread), _CHUNK):
        assert conn is not None, "messages to read need a connection"
        chunk = unread[start : start + _CHUNK]
        rows = await _LOCK_STATES.fetch(conn, db, {"ids": _id_list(db, chunk)})
        for row in rows:
            locked = _MessageState(row, codec)
            states[locked.id] = locked
    if not states:
        return None
    failing = sorted({r.message_id for r in records if r.outcome == "failed"} & set(states))
    routes = {}
    if failing:
        assert conn is not None, "failed records need a connection"
        routes = await failover_routes(conn, failing)
    exchanges = {key: _Exchange(at, detail) for key, (at, detail) in _shared(records).items()}
    events: list[dict[str, Any]] = []
    new_provider_ids: list[tuple[Any, ...]] = []
    # The messages of one request are in one state and get equivalent records: the
    # effect is worked out once per (state, record) and shared.
    effects: dict[tuple[Any, ...], _Effect] = {}
    # With one record per message, a shared effect's status event is the same row for every
    # message but its id: those messages are listed per (effect, exchange), no event built.
    one_each = len(ids) == len(records)
    listed: dict[tuple[_Effect, _Exchange], list[str]] = {}
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
                events.extend(_share(made, exchange))
            elif one_each and effect.attempt_then_status and state.id not in exchange.attempts:
                # What `_share` makes of the effect's events, without making them.
                exchange.attempts[state.id] = effect.attempt_part(record.provider_ids)
                listed.setdefault((effect, exchange), []).append(state.id)
            else:
                events.extend(_share(effect.events(state.id, record.provider_ids), exchange))
            state.key, state._values = effect.key, effect.values
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
    rounds = _event_rounds(events)
    if listed:
        # Each listed message's only event: its first round.
        if not rounds:
            rounds.append(({}, []))
        first = rounds[0][0]
        for (effect, exchange), message_ids in listed.items():
            status = effect.templates[1][0]
            stored = {
                **status,
                "at": codec.timestamp(status["at"]),
                "detail": _detail_json(status["detail"]),
                "shared": exchange,
            }
            first.setdefault(_row_key(stored), []).extend(message_ids)
    state_groups, state_rows = _state_writes(codec, states.values())
    return _Writes(
        state_groups=state_groups,
        state_rows=state_rows,
        exchanges=list(exchanges.values()),
        event_rounds=rounds,
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
            written = list(_WRITTEN_VALUES(state.values))
            for index in _WRITTEN_TIMESTAMPS:
                if isinstance(written[index], datetime):
                    written[index] = codec.timestamp(written[index])
            row = tuple(written)
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
        by_key: dict[tuple[Any, ...], list[str]] = {}
        for event in batch:
            key = _row_key(event)
            listed = by_key.get(key)
            if listed is None:
                by_key[key] = [event["message_id"]]
            else:
                listed.append(event["message_id"])
        same = {key: ids for key, ids in by_key.items() if len(ids) >= _SAME_VALUES_MIN}
        single = [
            (message_id, *key)
            for key, ids in by_key.items()
            if len(ids) < _SAME_VALUES_MIN
            for message_id in ids
        ]
        grouped.append((same, single))
    return grouped


def _row_key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """An event's values but for its message (stored form): events with the same key are
    written by one statement over their message ids."""
    return (event["at"], event["kind"], event["status"], event["detail"], event.get("shared"))


def _id_list(db: Database, ids: Sequence[Any]) -> Any:
    # One bound parameter for a whole list (store.bulk_sql.id_list_condition).
    return json.dumps(list(ids)) if db.is_sqlite else list(ids)


_LOCK_STATES = DriverStatement(
    lambda d: (
        select(*STATE_COLUMNS, row_address(d).label("address"))
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
    lambda d: (
        update(messages).where(id_list_condition(row_address(d), "ids", d)).values(_STATE_VALUES)
    )
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
        .where(id_list_condition(row_address(d), "ids", d), _as_read(bindparam))
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
