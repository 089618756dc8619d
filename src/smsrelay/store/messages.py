"""Messages: intake into the outbox, reading one or a page of them, canceling.

The dispatch side of the outbox is in `store.outbox` (claiming) and `store.attempt_results`
(recording attempts); their names are re-exported here so callers can import every message
operation from one place.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.attempt_results import (
    AttemptOutcome,
    AttemptPlan,
    AttemptRecord,
    plan_attempts,
    record_attempts,
    write_attempts,
)
from smsrelay.store.bulk_sql import Codec
from smsrelay.store.database import AnyRow, Database
from smsrelay.store.errors import StoreError
from smsrelay.store.idempotency import (
    IdempotencyRecord,
    IdempotentReplay,
    claim_idempotency_key,
    find_idempotent_replay,
)
from smsrelay.store.lifecycle import CANCELABLE, MessageStatus
from smsrelay.store.notifications import notify_outbox
from smsrelay.store.outbox import (
    ClaimedMessage,
    claim_due_messages,
    due_connector_ids,
    expire_unconfirmed,
    release_lease,
)
from smsrelay.store.tables import (
    connectors,
    message_events,
    messages,
    provider_ids,
    send_exchanges,
)
from smsrelay.store.timestamps import utc_now

__all__ = [
    "AttemptOutcome",
    "AttemptPlan",
    "AttemptRecord",
    "CancelResult",
    "ClaimedMessage",
    "IdempotencyRecord",
    "IdempotentReplay",
    "InvalidCursor",
    "MessageEvent",
    "MessageRecord",
    "NewMessage",
    "cancel_message",
    "claim_due_messages",
    "due_connector_ids",
    "expire_unconfirmed",
    "get_message",
    "insert_messages",
    "list_messages",
    "new_message_id",
    "new_message_ids",
    "plan_attempts",
    "record_attempts",
    "release_lease",
    "write_attempts",
]

INSERT_CHUNK = 1000
MAX_PAGE = 1000

# ---------------------------------------------------------------- ids

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per lookup: ids are made by the ten thousand for batches.
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)
MESSAGE_ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_id_lock = threading.Lock()
_last_id: tuple[int, int] = (0, 0)
_time_prefix: tuple[int, str] = (-1, "")
_last_random_text: tuple[int, str] = (-1, "")


def new_message_id() -> str:
    """A new 26-character message id (ULID: millisecond time, then randomness).

    Ids sort by creation time, also within one millisecond of one process (the random
    part is incremented there), so the newest-first list can page by id alone.
    """
    global _last_id, _time_prefix, _last_random_text
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last_id
        if millis <= last_millis:
            millis, randomness = last_millis, last_random + 1
            if randomness >> 80:
                millis, randomness = millis + 1, int.from_bytes(os.urandom(10), "big")
        else:
            randomness = int.from_bytes(os.urandom(10), "big")
        previous_random, previous_text = _last_random_text
        _last_id = (millis, randomness)
        if _time_prefix[0] != millis:
            _time_prefix = (millis, _encode_time(millis))
        prefix = _time_prefix[1]
        if randomness == previous_random + 1 and randomness & 1023:
            # A batch's ids differ in the last pair of digits but once per 1024.
            text = previous_text[:-2] + _DIGIT_PAIRS[randomness & 1023]
        else:
            text = _encode_random(randomness)
        _last_random_text = (randomness, text)
    return prefix + text


def new_message_ids(count: int) -> list[str]:
    """`count` new message ids in increasing order, as `new_message_id` would make them.

    One lock and one clock reading for the lot: a batch of 10 000 takes its ids at once.
    """
    global _last_id, _time_prefix, _last_random_text
    if count <= 0:
        return []
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last_id
        if millis <= last_millis:
            millis, first = last_millis, last_random + 1
        else:
            first = int.from_bytes(os.urandom(10), "big")
        while (first + count - 1) >> 80:
            # The random part would overflow: go on in the next millisecond, as one id does.
            millis, first = millis + 1, int.from_bytes(os.urandom(10), "big")
        if _time_prefix[0] != millis:
            _time_prefix = (millis, _encode_time(millis))
        prefix = _time_prefix[1]
        ids: list[str] = []
        randomness, end = first, first + count
        while randomness < end:
            # The ids of one run of 1024 share all but their last pair of digits.
            low = randomness & 1023
            run = min(end - randomness, 1024 - low)
            head = prefix + _encode_random(randomness)[:-2]
            ids += [head + pair for pair in _DIGIT_PAIRS[low : low + run]]
            randomness += run
        last = end - 1
        _last_id = (millis, last)
        _last_random_text = (last, ids[-1][10:])
    return ids


def _encode_random(randomness: int) -> str:
    return "".join([_DIGIT_PAIRS[(randomness >> s) & 1023] for s in _PAIR_SHIFTS])


def _encode_time(millis: int) -> str:
    digits = []
    for _ in range(10):
        millis, digit = divmod(millis, 32)
        digits.append(_CROCKFORD[digit])
    return "".join(reversed(digits))


# ---------------------------------------------------------------- intake

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class NewMessage(NamedTuple):
    """One message to queue; the caller generates `id` (new_message_id) to answer at once.

    A named tuple rather than a frozen dataclass: batches build them by the ten thousand,
    and a tuple is built in a third of the time.
    """

    id: str
    connector_id: int
    to: str
    created_at: datetime
    body: str | None = None
    sender_name: str | None = None
    sender_id: str | None = None
    template_id: str | None = None
    template_variables: tuple[str, ...] = ()
    entity_id: str | None = None
    campaign_id: str | None = None
    params: Mapping[str, str] = _NO_PARAMS
    webhook_id: str | None = None
    send_at: datetime | None = None
    segments: int = 1
    encoding: str = "gsm7"


def message_row(message: NewMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "connector_id": message.connector_id,
        "sender_name": message.sender_name,
        "sender_id": message.sender_id,
        "to": message.to,
        "body": message.body,
        "template_id": message.template_id,
        "template_variables": list(message.template_variables) or None,
        "entity_id": message.entity_id,
        "campaign_id": message.campaign_id,
        "params": dict(message.params) or None,
        "webhook_id": message.webhook_id,
        "status": MessageStatus.QUEUED.value,
        "send_at": message.send_at,
        "next_attempt_at": message.send_at or message.created_at,
        "attempts": 0,
        "segments": message.segments,
        "encoding": message.encoding,
        "created_at": message.created_at,
        "updated_at": message.created_at,
    }


# What `message_row` writes, as driver values in these column orders. A message with none
# of the optional fields (the usual API message) takes the short list: SQLite binds and
# PostgreSQL ships fewer values, and the missing columns are NULL either way.
_PLAIN_COLUMNS = (
    "id",
    "connector_id",
    "sender_name",
    "sender_id",
    "to",
    "body",
    "next_attempt_at",
    "segments",
    "encoding",
    "created_at",
    "updated_at",
)
_FULL_COLUMNS = (
    *_PLAIN_COLUMNS[:6],
    "template_id",
    "template_variables",
    "entity_id",
    "campaign_id",
    "params",
    "webhook_id",
    "send_at",
    *_PLAIN_COLUMNS[6:],
)
# The same for every new message: written as SQL literals, not bound once per row.
_CONSTANT_COLUMNS = (("status", f"'{MessageStatus.QUEUED.value}'"), ("attempts", "0"))
# SQLite runs one INSERT with many VALUES rows far faster than one execution per row
# (measured: 6-10 µs a row against 15-17 µs with executemany). A batch is cut into
# statements of this many rows, the rest into powers of two, so a connection's statement
# cache holds a handful of texts whatever the batch sizes.
_SQLITE_ROWS_PER_STATEMENT = 256


def _is_plain(message: NewMessage) -> bool:
    return (
        message.send_at is None
        and message.template_id is None
        and not message.template_variables
        and message.entity_id is None
        and message.campaign_id is None
        and not message.params
        and message.webhook_id is None
    )


Stamp = Callable[[datetime | None], Any]


def _plain_values(messages_: Sequence[NewMessage], stamp: Stamp) -> list[tuple[Any, ...]]:
    rows = []
    created_at, created = None, None
    for m in messages_:
        if m.created_at is not created_at:  # a batch shares one: convert it once
            created_at, created = m.created_at, stamp(m.created_at)
        rows.append(
            (
                m.id,
                m.connector_id,
                m.sender_name,
                m.sender_id,
                m.to,
                m.body,
                created,
                m.segments,
                m.encoding,
                created,
                created,
            )
        )
    return rows


def _full_values(messages_: Sequence[NewMessage], stamp: Stamp) -> list[tuple[Any, ...]]:
    rows = []
    for m in messages_:
        created = stamp(m.created_at)
        send_at = stamp(m.send_at)
        rows.append(
            (
                m.id,
                m.connector_id,
                m.sender_name,
                m.sender_id,
                m.to,
                m.body,
                m.template_id,
                Codec.json(list(m.template_variables) or None),
                m.entity_id,
                m.campaign_id,
                Codec.json(dict(m.params) or None),
                m.webhook_id,
                send_at,
                send_at or created,
                m.segments,
                m.encoding,
                created,
                created,
            )
        )
    return rows


def _iso_timestamp(value: datetime | None) -> str | None:
    """A timezone-aware datetime as ISO 8601 text, which PostgreSQL reads as `timestamptz`."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
    return value.isoformat()


class _MessageInsert:
    """INSERT statements for new messages, written once per database kind, row count and
    column list from the table's own metadata (names quoted and typed by SQLAlchemy's
    dialect), run through the driver with plain values.

    SQLite gets multi-row VALUES statements; PostgreSQL one `INSERT ... SELECT` from a
    jsonb array of the rows per chunk, where an executemany would run one statement per row.
    """

    def __init__(self) -> None:
        self._texts: dict[tuple[str, tuple[str, ...], int], str] = {}

    def _columns(self, db: Database, columns: tuple[str, ...]) -> str:
        quote = db.engine.dialect.identifier_preparer.format_column
        names = [*columns, *(name for name, _ in _CONSTANT_COLUMNS)]
        return ", ".join(quote(messages.c[name]) for name in names)

    def _sqlite(self, db: Database, columns: tuple[str, ...], rows: int) -> str:
        key = ("sqlite", columns, rows)
        found = self._texts.get(key)
        if found is None:
            group = "(" + ", ".join(["?"] * len(columns) + [v for _, v in _CONSTANT_COLUMNS]) + ")"
            found = self._texts[key] = (
                f"INSERT INTO messages ({self._columns(db, columns)}) VALUES "
                + ", ".join([group] * rows)
            )
        return found

    def _postgresql(self, db: Database, columns: tuple[str, ...]) -> str:
        key = ("postgresql", columns, 0)
        found = self._texts.get(key)
        if found is None:
            dialect = db.engine.dialect
            values = ", ".join(
                f"(r->>{n})::{messages.c[name].type.compile(dialect=dialect)}"
                for n, name in enumerate(columns)
            )
            constants = ", ".join(v for _, v in _CONSTANT_COLUMNS)
            found = self._texts[key] = (
                f"INSERT INTO messages ({self._columns(db, columns)}) "
                f"SELECT {values}, {constants} FROM jsonb_array_elements($1::jsonb) AS r"
            )
        return found

    async def run(self, conn: AsyncConnection, db: Database, batch: Sequence[NewMessage]) -> None:
        """Insert `batch` (at most INSERT_CHUNK messages) as queued messages."""
        stamp: Stamp = Codec(db).timestamp if db.is_sqlite else _iso_timestamp
        columns: tuple[str, ...]
        if all(_is_plain(m) for m in batch):
            columns, values = _PLAIN_COLUMNS, _plain_values(batch, stamp)
        else:
            columns, values = _FULL_COLUMNS, _full_values(batch, stamp)
        if not db.is_sqlite:
            # One JSON text of all rows: asyncpg would check every element of an array
            # parameter for being a nested array (two ABC isinstance calls per value).
            await conn.exec_driver_sql(self._postgresql(db, columns), (json.dumps(values),))
            return
        start = 0
        while start < len(values):
            left = len(values) - start
            rows = (
                _SQLITE_ROWS_PER_STATEMENT
                if left >= _SQLITE_ROWS_PER_STATEMENT
                else 1 << (left.bit_length() - 1)
            )
            flat = tuple(chain.from_iterable(values[start : start + rows]))
            await conn.exec_driver_sql(self._sqlite(db, columns, rows), flat)
            start += rows


_INSERT_MESSAGES = _MessageInsert()


class _KeyTaken(Exception):
    pass


async def insert_messages(
    db: Database,
    new_messages: Sequence[NewMessage],
    *,
    idempotency: IdempotencyRecord | None = None,
) -> IdempotentReplay | None:
    """Queue messages in one transaction; with `idempotency`, at most once per key.

    Returns None when the messages were queued, or the stored answer when the idempotency
    key was used before for the same request (nothing is queued then). Raises
    `IdempotencyConflict` when the key was used for a different request.
    """
    # A key can vanish between our failed claim and the lookup (pruned): claim again.
    for _ in range(3):
        try:
            async with db.transaction() as conn:
                if idempotency is not None and not await claim_idempotency_key(
                    db, conn, idempotency
                ):
                    raise _KeyTaken
                for start in range(0, len(new_messages), INSERT_CHUNK):
                    chunk = new_messages[start : start + INSERT_CHUNK]
                    await _INSERT_MESSAGES.run(conn, db, chunk)
                if new_messages:
                    # Workers in other processes LISTEN for this (delivered at commit).
                    await notify_outbox(conn, db, {m.connector_id for m in new_messages})
            return None
        except _KeyTaken:
            assert idempotency is not None
            replay = await find_idempotent_replay(
                db, idempotency.api_key_id, idempotency.key, idempotency.request_hash
            )
            if replay is not None:
                return replay
    raise StoreError("the idempotency key kept changing while the request was stored; retry")


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One entry of a message's history."""

    id: int
    at: datetime
    kind: str  # status | attempt | report | note
    status: str | None
    detail: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as stored. `events` is filled by `get_message` only (empty in lists)."""

    id: str
    connector_id: int
    connector_name: str | None  # None once the connector is deleted
    sender_name: str | None
    sender_id: str | None
    to: str
    body: str | None
    template_id: str | None
    template_variables: tuple[str, ...]
    entity_id: str | None
    campaign_id: str | None
    params: Mapping[str, str]
    webhook_id: str | None
    status: MessageStatus
    send_at: datetime | None
    next_attempt_at: datetime | None
    attempts: int
    segments: int
    encoding: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    final_at: datetime | None
    provider_ids: tuple[str, ...] = ()
    events: tuple[MessageEvent, ...] = ()


class InvalidCursor(StoreError, ValueError):
    """A list cursor that is not a message id."""


def _select_messages() -> Select[Any]:
    return select(messages, connectors.c.name.label("connector_name")).outerjoin(
        connectors, connectors.c.id == messages.c.connector_id
    )


def _record(
    row: AnyRow, ids: Sequence[str] = (), events: Sequence[MessageEvent] = ()
) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        connector_id=row.connector_id,
        connector_name=row.connector_name,
        sender_name=row.sender_name,
        sender_id=row.sender_id,
        to=row.to,
        body=row.body,
        template_id=row.template_id,
        template_variables=tuple(row.template_variables or ()),
        entity_id=row.entity_id,
        campaign_id=row.campaign_id,
        params=dict(row.params or {}),
        webhook_id=row.webhook_id,
        status=MessageStatus(row.status),
        send_at=row.send_at,
        next_attempt_at=row.next_attempt_at,
        attempts=row.attempts,
        segments=row.segments,
        encoding=row.encoding,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
        final_at=row.final_at,
        provider_ids=tuple(ids),
        events=tuple(events),
    )


async def _provider_ids_of(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not ids:
        return found
    rows = await conn.execute(
        select(provider_ids.c.message_id, provider_ids.c.provider_id)
        .where(provider_ids.c.message_id.in_(ids))
        .order_by(provider_ids.c.message_id, provider_ids.c.provider_id)
    )
    for message_id, provider_id in rows:
        found.setdefault(message_id, []).append(provider_id)
    return found


async def get_message(db: Database, message_id: str) -> MessageRecord | None:
    """One message with its provider ids and its history in order; None if unknown."""
    async with db.connect() as conn:
        row = (await conn.execute(_select_messages().where(messages.c.id == message_id))).first()
        if row is None:
            return None
        event_rows = await conn.execute(
            select(
                message_events,
                send_exchanges.c.detail.label("shared_detail"),
                send_exchanges.c.attempts.label("shared_attempts"),
            )
            .outerjoin(send_exchanges, send_exchanges.c.id == message_events.c.exchange_id)
            .where(message_events.c.message_id == message_id)
            .order_by(message_events.c.id)
        )
        events = [event for e in event_rows for event in _history_entries(e, message_id)]
        ids = (await _provider_ids_of(conn, [message_id])).get(message_id, [])
    return _record(row, ids, events)


def _history_entries(row: AnyRow, message_id: str) -> list[MessageEvent]:
    """The history entries one event row stands for (two for a folded batch attempt).

    A batch's attempts keep the request/response trace they share in `send_exchanges`: it
    completes each one's own part, as if it had been stored with it. A status event that
    points to an exchange holding this message's attempt part (0008) stands for that
    attempt too, which came just before it at the same instant.
    """
    detail: Mapping[str, Any] | None = row.detail
    if row.shared_detail is not None and row.kind != "status":
        detail = {**(detail or {}), **row.shared_detail}
    entry = MessageEvent(id=row.id, at=row.at, kind=row.kind, status=row.status, detail=detail)
    own = (row.shared_attempts or {}).get(message_id) if row.kind == "status" else None
    if own is None:
        return [entry]
    attempt = MessageEvent(
        id=row.id, at=row.at, kind="attempt", status=row.status, detail={**own, **row.shared_detail}
    )
    return [attempt, entry]


async def list_messages(
    db: Database,
    *,
    status: str | Sequence[str] | None = None,
    to: str | None = None,
    connector: str | None = None,
    campaign_id: str | None = None,
    sender: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[MessageRecord], str | None]:
    """A page of messages, newest first, and the cursor of the next page (None at the end).

    Filters combine with AND; `connector` and `sender` are names; `created_after` is
    inclusive and `created_before` exclusive; `cursor` is the last id of the previous page.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE} (got {limit})")
    query = _select_messages()
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        query = query.where(messages.c.status.in_([MessageStatus(s).value for s in wanted]))
    if to is not None:
        query = query.where(messages.c.to == to)
    if connector is not None:
        query = query.where(connectors.c.name == connector)
    if campaign_id is not None:
        query = query.where(messages.c.campaign_id == campaign_id)
    if sender is not None:
        query = query.where(messages.c.sender_name == sender)
    if created_after is not None:
        query = query.where(messages.c.created_at >= created_after)
    if created_before is not None:
        query = query.where(messages.c.created_at < created_before)
    if cursor is not None:
        if not MESSAGE_ID_PATTERN.match(cursor):
            raise InvalidCursor(f"cursor {cursor[:40]!r} is not a message id")
        query = query.where(messages.c.id < cursor)
    query = query.order_by(messages.c.id.desc()).limit(limit + 1)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
        page = rows[:limit]
        ids = await _provider_ids_of(conn, [row.id for row in page])
    records = [_record(row, ids.get(row.id, ())) for row in page]
    next_cursor = page[-1].id if len(rows) > limit else None
    return records, next_cursor


# ---------------------------------------------------------------- canceling


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What `cancel_message` did: `status` is the message's status afterwards.

    `reason` says why nothing was canceled: `not_found`, or the message's status (it is
    already with the provider or finished).
    """

    canceled: bool
    status: MessageStatus | None
    reason: str | None = None


async def cancel_message(
    db: Database, message_id: str, now: datetime | None = None
) -> CancelResult:
    """Cancel a message that is not yet with the provider (queued or held)."""
    now = now or utc_now()
    async with db.transaction() as conn:
        previous = (
            await conn.execute(
                select(messages.c.status).where(messages.c.id == message_id).with_for_update()
            )
        ).scalar_one_or_none()
        if previous is None:
            return CancelResult(canceled=False, status=None, reason="not_found")
        if MessageStatus(previous) not in CANCELABLE:
            return CancelResult(
                canceled=False,
                status=MessageStatus(previous),
                reason=(
                    f"the message is {previous}; only queued or held (dispatch_error) "
                    "messages can be canceled"
                ),
            )
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(
                status=MessageStatus.CANCELED.value,
                next_attempt_at=None,
                final_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            insert(message_events).values(
                message_id=message_id,
                at=now,
                kind="status",
                status=MessageStatus.CANCELED.value,
                detail={"from": previous, "reason": "canceled"},
            )
        )
    return CancelResult(canceled=True, status=MessageStatus.CANCELED)
