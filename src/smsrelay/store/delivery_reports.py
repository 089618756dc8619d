"""Delivery-report callbacks at rest: durable intake, the mapper's queue, applying reports.

Intake stores every raw callback as `received` before the provider gets its answer. The
`CallbackWriter` coalesces concurrent requests into one INSERT transaction (a group
commit), so a burst of thousands of callbacks costs a handful of transactions.

The delivery mapper reads due callbacks (`due_callbacks`), parses them outside any
transaction and hands the reports to `apply_delivery_reports`, which matches them to
messages and moves statuses in one transaction per batch, obeying the lifecycle:

- monotonic: a late, duplicate or out-of-order report never moves a message backwards;
- every report is kept in the message's history, a duplicate (same message, provider id
  and raw status) only once;
- a message sent in parts (one provider id each) is delivered only when every part is,
  and undelivered as soon as one part finally fails;
- a report whose provider id is not recorded yet (it beat the send response) leaves its
  callback an `orphan`, looked at again (after `orphan_retry`, then less and less often)
  until `orphan_window` has passed; then it stays an orphan, visible to the assistant.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.exchange import DeliveryOutcome, DeliveryReport, InboundCallback
from smsrelay.store.bulk_sql import Codec, DriverStatement
from smsrelay.store.database import AnyRow, Database
from smsrelay.store.lifecycle import FINAL, MessageStatus, status_after_report
from smsrelay.store.tables import UNMAPPED, delivery_reports, message_events, messages, provider_ids
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

S = MessageStatus
_CHUNK = 1000
ORPHAN_MAX_DELAY = timedelta(minutes=1)


class CallbackState(enum.StrEnum):
    """Where a stored callback is in mapping."""

    RECEIVED = "received"  # stored, not yet mapped
    MAPPED = "mapped"  # every report matched a message
    ORPHAN = "orphan"  # some report matched no message (yet)
    ERROR = "error"  # could not be read; `error` says why


# ---------------------------------------------------------------- intake


@dataclass(frozen=True, slots=True)
class NewCallback:
    """A callback as received, to store (headers already redacted)."""

    connector_id: int
    received_at: datetime
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    content_type: str | None = None


_CALLBACK_COLUMNS = (
    "connector_id",
    "received_at",
    "method",
    "url",
    "content_type",
    "headers",
    "body",
    "state",
    "report_count",
    "next_check_at",
)
# A group commit is one statement with no per-row binding by SQLAlchemy: on SQLite a
# multi-row INSERT of plain values (in `_INSERT_CALLBACK`'s bind order, store.bulk_sql)
# run straight on the driver; on PostgreSQL an INSERT from arrays.
_INSERT_CALLBACK = DriverStatement(
    lambda _d: insert(delivery_reports), _CALLBACK_COLUMNS, many=True
)
_SQLITE_INSERT_CALLBACK = str(
    insert(delivery_reports).compile(
        dialect=sqlite_dialect(paramstyle="qmark"), column_keys=list(_CALLBACK_COLUMNS)
    )
)
# Rows per SQLite statement, 10 parameters each: under SQLite's limit of 32 766 bound
# parameters (999 before SQLite 3.32).
_SQLITE_ROWS_PER_INSERT = 500 if sqlite3.sqlite_version_info >= (3, 32) else 99
_RECEIVED = CallbackState.RECEIVED.value
# PostgreSQL binds each of these columns as one array ($1 to $7, in this order).
_UNNESTED_COLUMNS = _CALLBACK_COLUMNS[:7]
_POSTGRESQL_INSERT_CALLBACKS = (
    "INSERT INTO delivery_reports (connector_id, received_at, method, url, content_type, "
    "headers, body, state, report_count, next_check_at) "
    "SELECT connector_id, received_at, method, url, content_type, headers::json, body, "
    f"'{_RECEIVED}', 0, received_at "
    "FROM unnest($1::integer[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::bytea[]) "
    "AS t(connector_id, received_at, method, url, content_type, headers, body)"
)


def _driver_row(callback: NewCallback, codec: Codec) -> dict[str, Any]:
    received_at = codec.timestamp(callback.received_at)
    content_type = callback.content_type
    return {
        "connector_id": callback.connector_id,
        "received_at": received_at,
        "method": callback.method[:8],
        "url": callback.url,
        "content_type": content_type[:255] if content_type else None,
        "headers": codec.json(dict(callback.headers)),
        "body": callback.body,
        "state": _RECEIVED,
        "report_count": 0,
        "next_check_at": received_at,
    }


async def insert_callbacks(db: Database, callbacks: Sequence[NewCallback]) -> None:
    """Store callbacks as `received`, due for mapping at once, in one transaction."""
    if not callbacks:
        return
    codec = Codec(db)
    rows = [_driver_row(callback, codec) for callback in callbacks]
    if db.is_sqlite:
        await _insert_on_sqlite(db, _INSERT_CALLBACK.tuples(db, rows))
        return
    # PostgreSQL: one statement per group, each column bound as one array, instead of an
    # executemany (one execution per row on the server). A single statement is atomic on
    # its own: run in autocommit, it is committed when it returns, with no BEGIN and
    # COMMIT round trips.
    arrays = tuple([row[name] for row in rows] for name in _UNNESTED_COLUMNS)
    async with db.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql(_POSTGRESQL_INSERT_CALLBACKS, arrays)


async def _insert_on_sqlite(db: Database, params: list[tuple[Any, ...]]) -> None:
    """The group as one multi-row INSERT, in one call to the driver's thread.

    Through SQLAlchemy each statement costs three hand-offs to aiosqlite's thread (cursor,
    execute, close), and BEGIN and COMMIT are statements too; under load every hand-off
    waits for that thread to be scheduled. One statement is atomic on its own (the
    connection is in autocommit mode), so the group commits as this call returns.
    """
    chunks = [
        params[start : start + _SQLITE_ROWS_PER_INSERT]
        for start in range(0, len(params), _SQLITE_ROWS_PER_INSERT)
    ]
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # aiosqlite.Connection, autocommit mode
        if len(chunks) == 1:
            await driver.execute(_sqlite_insert_rows(len(params)), list(chain(*params)))
            return
        # More rows than one statement takes: one explicit transaction around them all.
        await driver.execute("BEGIN IMMEDIATE")
        try:
            for chunk in chunks:
                await driver.execute(_sqlite_insert_rows(len(chunk)), list(chain(*chunk)))
            await driver.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await driver.rollback()
            raise


@functools.lru_cache(maxsize=64)
def _sqlite_insert_rows(count: int) -> str:
    """INSERT of `count` rows: the single-row statement with `count` VALUES groups."""
    head, values = _SQLITE_INSERT_CALLBACK.split(" VALUES ")
    return f"{head} VALUES {', '.join([values] * count)}"


class CallbackNotStored(Exception):
    """The transaction holding a callback failed; the provider should send it again."""


WriteCallbacks = Callable[[Database, Sequence[NewCallback]], Awaitable[None]]


class CallbackWriter:
    """Group commit of incoming callbacks: concurrent `store` calls share one transaction.

    A group is written when `max_rows` callbacks wait or `max_delay` seconds after the
    first of them arrived. At most `concurrency` transactions run at once (one on SQLite,
    whose writers are serialised anyway); callbacks arriving meanwhile join the next group,
    so the busier the intake, the bigger the groups.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_rows: int = 500,
        max_delay: float = 0.002,
        concurrency: int | None = None,
        on_stored: Callable[[], None] | None = None,
        write: WriteCallbacks = insert_callbacks,
    ) -> None:
        self.database = database
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.concurrency = concurrency or (1 if database.is_sqlite else 4)
        self._on_stored = on_stored
        self._write = write
        self._pending: list[tuple[NewCallback, asyncio.Future[None]]] = []
        self._writers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0  # transactions committed, for metrics and tests
        self.stored = 0  # callbacks committed

    async def store(self, callback: NewCallback) -> None:
        """Store one callback; returns once the transaction holding it has committed.

        Raises CallbackNotStored when that transaction failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((callback, future))
        if len(self._pending) >= self.max_rows:
            self._start_writer()
        elif self._timer is None and self._writers < self.concurrency:
            self._timer = loop.call_later(self.max_delay, self._start_writer)
        await future

    def _start_writer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._writers >= self.concurrency:
            return  # a running writer takes them when its transaction is done
        self._writers += 1
        task = asyncio.create_task(self._write_pending())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self.max_rows]
                del self._pending[: self.max_rows]
                try:
                    await self._write(self.database, [callback for callback, _ in group])
                except Exception as exc:
                    log.exception("storing %d delivery-report callbacks failed", len(group))
                    failure = CallbackNotStored(f"{type(exc).__name__}: {exc}")
                    for _, future in group:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                self.flushes += 1
                self.stored += len(group)
                for _, future in group:
                    # A request whose client went away was cancelled; its row is stored anyway.
                    if not future.done():
                        future.set_result(None)
                if self._on_stored is not None:
                    self._on_stored()
        finally:
            self._writers -= 1

    async def aclose(self) -> None:
        """Write whatever is waiting and wait for transactions in flight."""
        self._start_writer()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class StoredCallback:
    """A callback as stored, with where it is in mapping."""

    id: int
    connector_id: int
    received_at: datetime
    method: str
    url: str
    content_type: str | None
    headers: Mapping[str, str]
    body: bytes
    state: CallbackState
    processed_at: datetime | None
    error: str | None
    report_count: int
    next_check_at: datetime | None

    def as_inbound(self) -> InboundCallback:
        """The callback as the connector engine reads it (query parsed from the URL)."""
        query = tuple(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))
        return InboundCallback(
            method=self.method,
            url=self.url,
            query=query,
            headers=dict(self.headers),
            body=self.body,
            content_type=self.content_type,
        )


def _stored(row: AnyRow) -> StoredCallback:
    return StoredCallback(
        id=row.id,
        connector_id=row.connector_id,
        received_at=row.received_at,
        method=row.method,
        url=row.url,
        content_type=row.content_type,
        headers=dict(row.headers or {}),
        body=bytes(row.body),
        state=CallbackState(row.state),
        processed_at=row.processed_at,
        error=row.error,
        report_count=row.report_count,
        next_check_at=row.next_check_at,
    )


async def list_callbacks(
    db: Database,
    connector_id: int,
    *,
    limit: int = 20,
    state: CallbackState | None = None,
) -> list[StoredCallback]:
    """A connector's most recent callbacks, newest first (optionally in one state)."""
    query = select(delivery_reports).where(delivery_reports.c.connector_id == connector_id)
    if state is not None:
        query = query.where(delivery_reports.c.state == state.value)
    query = query.order_by(delivery_reports.c.id.desc()).limit(limit)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_stored(row) for row in rows]


async def get_callback(db: Database, callback_id: int) -> StoredCallback | None:
    """One stored callback, or None."""
    async with db.connect() as conn:
        row = (
            await conn.execute(select(delivery_reports).where(delivery_reports.c.id == callback_id))
        ).first()
    return _stored(row) if row is not None else None


async def count_callbacks(db: Database, *, connector_id: int | None = None) -> int:
    """How many callbacks are stored (of one connector, or in all)."""
    query = select(func.count()).select_from(delivery_reports)
    if connector_id is not None:
        query = query.where(delivery_reports.c.connector_id == connector_id)
    async with db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def _is_due(now: datetime) -> Any:
    # The same text as the partial index's condition, so both databases use the index.
    return UNMAPPED & (delivery_reports.c.next_check_at <= now)


async def due_callbacks(db: Database, *, now: datetime, limit: int) -> list[StoredCallback]:
    """Callbacks due for mapping at `now`: received ones, and orphans due another look."""
    query = (
        select(delivery_reports)
        .where(_is_due(now))
        .order_by(delivery_reports.c.next_check_at, delivery_reports.c.id)
        .limit(limit)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_stored(row) for row in rows]


# ---------------------------------------------------------------- applying reports


@dataclass(frozen=True, slots=True)
class MappedCallback:
    """One callback read with its connector's `delivery` mapping: its reports, or why not.

    `window_hours` is the connector's delivery window: a report that shows a message still
    `sending` was accepted makes it `sent` with that deadline.
    """

    id: int
    connector_id: int
    received_at: datetime
    reports: tuple[DeliveryReport, ...] = ()
    match: Literal["provider_id", "message_id"] = "provider_id"
    window_hours: float | None = None
    error: str | None = None


@dataclass
class MappingResult:
    """What one `apply_delivery_reports` call did."""

    mapped: int = 0
    orphans: int = 0
    errors: int = 0
    skipped: int = 0  # taken by another mapper meanwhile
    reports: int = 0
    duplicates: int = 0
    status_changes: list[tuple[str, MessageStatus]] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Callbacks this call settled or rescheduled."""
        return self.mapped + self.orphans + self.errors

    def merge(self, other: MappingResult) -> None:
        """Add another call's counts to these."""
        self.mapped += other.mapped
        self.orphans += other.orphans
        self.errors += other.errors
        self.skipped += other.skipped
        self.reports += other.reports
        self.duplicates += other.duplicates
        self.status_changes.extend(other.status_changes)


_STATE_COLUMNS = (
    messages.c.id,
    messages.c.connector_id,
    messages.c.status,
    messages.c.sent_at,
    messages.c.final_at,
    messages.c.next_attempt_at,
    messages.c.failure_reason,
)
_WRITTEN = ("status", "sent_at", "final_at", "next_attempt_at", "failure_reason", "updated_at")


class _Message:
    """A matched message under lock: its state, its parts and the reports already seen."""

    def __init__(self, row: AnyRow) -> None:
        self.id: str = row.id
        self.connector_id: int = row.connector_id
        self.values: dict[str, Any] = {name: getattr(row, name) for name in _WRITTEN[:-1]}
        self.parts: set[str] = set()
        self.delivered_parts: set[str] = set()
        self.seen: set[tuple[str, str]] = set()
        self.changed = False

    @property
    def status(self) -> MessageStatus:
        return MessageStatus(self.values["status"])

    def remember(self, detail: Mapping[str, Any]) -> None:
        """Take note of a report already in the history."""
        part = str(detail.get("provider_id") or "")
        self.seen.add((part, str(detail.get("raw_status") or "").casefold()))
        if detail.get("outcome") == DeliveryOutcome.DELIVERED.value and part:
            self.delivered_parts.add(part)


async def apply_delivery_reports(
    db: Database,
    callbacks: Sequence[MappedCallback],
    *,
    now: datetime | None = None,
    orphan_retry: timedelta = timedelta(seconds=1),
    orphan_window: timedelta = timedelta(minutes=10),
) -> MappingResult:
    """Match the callbacks' reports to messages and apply them, in one transaction.

    Only callbacks still due at `now` are applied (another mapper may have taken some);
    each ends `mapped`, `orphan` (some report matched no message) or `error`.
    """
    now = now or utc_now()
    result = MappingResult()
    if not callbacks:
        return result
    async with db.transaction() as conn:
        taken = await _lock_due(db, conn, [c.id for c in callbacks], now)
        result.skipped = len(callbacks) - len(taken)
        work = sorted((c for c in callbacks if c.id in taken), key=lambda c: c.id)
        by_key = await _provider_id_rows(conn, work)
        resolved = {
            (c.id, index): _pick_message(report, by_key.get((c.connector_id, report.key), []))
            for c in work
            if c.match == "provider_id"
            for index, report in enumerate(c.reports)
        }
        echoed = {r.key for c in work if c.match == "message_id" for r in c.reports}
        found = await _lock_messages(
            db, conn, {m for m in resolved.values() if m is not None} | echoed
        )
        events: list[dict[str, Any]] = []
        callback_rows: list[dict[str, Any]] = []
        for callback in work:
            unmatched: list[str] = []
            for index, report in enumerate(callback.reports):
                if callback.match == "provider_id":
                    message = found.get(resolved[(callback.id, index)] or "")
                else:
                    message = found.get(report.key)
                    if message is not None and message.connector_id != callback.connector_id:
                        message = None  # another connector's message: not this provider's to report
                if message is None:
                    unmatched.append(report.key)
                    continue
                result.reports += 1
                events.extend(_apply_report(message, report, callback, now, result))
            callback_rows.append(
                _settle(callback, unmatched, now, orphan_retry, orphan_window, result)
            )
        changed = [message for message in found.values() if message.changed]
        if changed:
            await conn.execute(_UPDATE_MESSAGE, [_bind(message, now) for message in changed])
        if events:
            await conn.execute(insert(message_events), events)
        if callback_rows:
            await conn.execute(_UPDATE_CALLBACK, callback_rows)
    return result


async def _lock_due(
    db: Database, conn: AsyncConnection, ids: Sequence[int], now: datetime
) -> set[int]:
    taken: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        query = select(delivery_reports.c.id).where(
            delivery_reports.c.id.in_(ids[start : start + _CHUNK]), _is_due(now)
        )
        if not db.is_sqlite:
            # Several workers may map at once: each callback is applied by one of them.
            query = query.with_for_update(skip_locked=True)
        taken.update((await conn.execute(query)).scalars())
    return taken


async def _provider_id_rows(
    conn: AsyncConnection, work: Sequence[MappedCallback]
) -> dict[tuple[int, str], list[tuple[str, str | None]]]:
    """(connector id, provider id) -> [(message id, recipient)] for the reports' keys."""
    keys: dict[int, set[str]] = {}
    for callback in work:
        if callback.match == "provider_id":
            keys.setdefault(callback.connector_id, set()).update(r.key for r in callback.reports)
    found: dict[tuple[int, str], list[tuple[str, str | None]]] = {}
    for connector_id, wanted in keys.items():
        ordered = sorted(wanted)
        for start in range(0, len(ordered), _CHUNK):
            rows = await conn.execute(
                select(
                    provider_ids.c.provider_id, provider_ids.c.message_id, provider_ids.c.recipient
                )
                .where(provider_ids.c.connector_id == connector_id)
                .where(provider_ids.c.provider_id.in_(ordered[start : start + _CHUNK]))
            )
            for provider_id, message_id, recipient in rows:
                found.setdefault((connector_id, provider_id), []).append((message_id, recipient))
    return found


async def _lock_messages(db: Database, conn: AsyncConnection, ids: set[str]) -> dict[str, _Message]:
    """The messages under lock, with their parts and the reports already in their history."""
    ordered = sorted(ids)
    found: dict[str, _Message] = {}
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        # Locking in id order, as record_attempts does, keeps the two from deadlocking.
        query = select(*_STATE_COLUMNS).where(messages.c.id.in_(chunk)).order_by(messages.c.id)
        if not db.is_sqlite:
            query = query.with_for_update()
        for row in await conn.execute(query):
            found[row.id] = _Message(row)
    known = sorted(found)
    for start in range(0, len(known), _CHUNK):
        chunk = known[start : start + _CHUNK]
        parts = await conn.execute(
            select(provider_ids.c.message_id, provider_ids.c.provider_id).where(
                provider_ids.c.message_id.in_(chunk)
            )
        )
        for message_id, provider_id in parts:
            found[message_id].parts.add(provider_id)
        reports = await conn.execute(
            select(message_events.c.message_id, message_events.c.detail)
            .where(message_events.c.message_id.in_(chunk))
            .where(message_events.c.kind == "report")
        )
        for message_id, detail in reports:
            found[message_id].remember(detail or {})
    return found


_DIGITS = re.compile(r"\D")
# A national number (0151…, 9812…) still names the same phone as its E.164 form.
_MIN_NATIONAL_DIGITS = 7


def same_number(a: str, b: str) -> bool:
    """Whether two renderings of a phone number name the same phone (digits compared)."""
    x, y = _DIGITS.sub("", a), _DIGITS.sub("", b)
    if not x or not y:
        return a.strip() == b.strip()
    if x == y:
        return True
    # A national number's trunk prefix (0) is not part of the international form.
    short, long = sorted((x.lstrip("0"), y.lstrip("0")), key=len)
    return len(short) >= _MIN_NATIONAL_DIGITS and long.endswith(short)


def _pick_message(report: DeliveryReport, rows: Sequence[tuple[str, str | None]]) -> str | None:
    """The message a report is about, among those sent with its provider id.

    A shared id (Sinch batch, MSG91 request) is narrowed by the reported recipient; an id
    that still names several messages matches none rather than the wrong one.
    """
    candidates = {message_id for message_id, _ in rows}
    if report.recipient is not None:
        hits = {
            message_id
            for message_id, recipient in rows
            if recipient is not None and same_number(recipient, report.recipient)
        }
        if len(hits) == 1:
            return hits.pop()
        if hits:
            return None
    return candidates.pop() if len(candidates) == 1 else None


def failure_reason(report: DeliveryReport) -> str:
    """The failure reason a report gives: its reason, else its error code, else its status."""
    if report.reason:
        return report.reason
    if report.error_code:
        return f"error code {report.error_code}"
    return f"status {report.raw_status}" if report.raw_status else "reported as failed"


def _apply_report(
    message: _Message,
    report: DeliveryReport,
    callback: MappedCallback,
    now: datetime,
    result: MappingResult,
) -> list[dict[str, Any]]:
    """Change the message by one report; returns the history events it adds."""
    part = report.key if callback.match == "provider_id" else ""
    seen_key = (part, report.raw_status.casefold())
    if seen_key in message.seen:
        result.duplicates += 1
        return []
    message.seen.add(seen_key)
    outcome = report.outcome
    if outcome is DeliveryOutcome.DELIVERED and part:
        message.delivered_parts.add(part)
        if not message.parts <= message.delivered_parts:
            outcome = DeliveryOutcome.PENDING  # another part is still on its way
    old = message.status
    target = status_after_report(old, outcome)
    at = callback.received_at
    detail: dict[str, Any] = {
        "raw_status": report.raw_status,
        "outcome": report.outcome.value,
        "provider_id": part or None,
        "message_ref": report.key if not part else None,
        "recipient": report.recipient,
        "reason": report.reason,
        "error_code": report.error_code,
        "timestamp": report.timestamp,
        "callback_id": callback.id,
    }
    events = [_event(message.id, at, "report", (target or old).value, _compact(detail))]
    if target is None or target is old:
        return events
    values = message.values
    values["status"] = target.value
    message.changed = True
    result.status_changes.append((message.id, target))
    if old is S.SENDING and values["sent_at"] is None:
        values["sent_at"] = at
    change: dict[str, Any] = {"from": old.value, "callback_id": callback.id}
    if target in FINAL:
        values["final_at"] = now
        values["next_attempt_at"] = None
        if target is S.UNDELIVERED:
            values["failure_reason"] = failure_reason(report)
            change["reason"] = values["failure_reason"]
            if report.error_code:
                change["error_code"] = report.error_code
        else:
            values["failure_reason"] = None
    elif target is S.SENT:
        # The send response is not recorded yet; it will not move a `sent` message, so the
        # report deadline is set here.
        window = callback.window_hours
        values["next_attempt_at"] = now + timedelta(hours=window) if window else None
    events.append(_event(message.id, at, "status", target.value, change))
    return events


def _settle(
    callback: MappedCallback,
    unmatched: Sequence[str],
    now: datetime,
    orphan_retry: timedelta,
    orphan_window: timedelta,
    result: MappingResult,
) -> dict[str, Any]:
    """The callback row's new state: mapped, orphan (maybe looked at again) or error."""
    row: dict[str, Any] = {
        "b_id": callback.id,
        "b_processed_at": now,
        "b_report_count": len(callback.reports),
        "b_next_check_at": None,
        "b_error": None,
    }
    if callback.error is not None or not callback.reports:
        result.errors += 1
        row["b_state"] = CallbackState.ERROR.value
        row["b_error"] = _text(
            callback.error
            or "no delivery report in the callback: nothing was found at delivery.message_id"
        )
        return row
    if not unmatched:
        result.mapped += 1
        row["b_state"] = CallbackState.MAPPED.value
        return row
    result.orphans += 1
    row["b_state"] = CallbackState.ORPHAN.value
    keys = ", ".join(dict.fromkeys(unmatched))
    shown = keys if len(keys) <= 200 else keys[:200] + "…"
    what = "provider id" if callback.match == "provider_id" else "message id"
    row["b_error"] = _text(
        f"{len(unmatched)} of {len(callback.reports)} report(s) match no message by {what}: {shown}"
    )
    # Our own message ids exist before any send, so only a provider id can still turn up
    # (the report beat the send response). The longer it has waited, the less likely that
    # is: look again after as long as it has waited (1, 2, 4, 8 … s), at most a minute.
    deadline = callback.received_at + orphan_window
    if callback.match == "provider_id" and now < deadline:
        delay = min(max(orphan_retry, now - callback.received_at), ORPHAN_MAX_DELAY)
        row["b_next_check_at"] = min(now + delay, deadline)
    return row


def _text(text: str) -> str:
    # PostgreSQL text cannot hold NUL, and a provider's bytes may contain one.
    return text.replace("\x00", "\ufffd")


async def fail_callbacks(
    db: Database, callback_ids: Sequence[int], error: str, *, now: datetime | None = None
) -> None:
    """Set callbacks aside as `error` (they could not be applied); kept for the assistant."""
    if not callback_ids:
        return
    async with db.transaction() as conn:
        await conn.execute(
            update(delivery_reports)
            .where(delivery_reports.c.id.in_(list(callback_ids)))
            .values(
                state=CallbackState.ERROR.value,
                error=_text(error),
                processed_at=now or utc_now(),
                next_check_at=None,
            )
        )


def _compact(detail: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in detail.items() if value is not None}


def _event(
    message_id: str, at: datetime, kind: str, status: str | None, detail: dict[str, Any]
) -> dict[str, Any]:
    return {"message_id": message_id, "at": at, "kind": kind, "status": status, "detail": detail}


_UPDATE_MESSAGE = (
    update(messages)
    .where(messages.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=messages.c[name].type) for name in _WRITTEN})
)


def _bind(message: _Message, now: datetime) -> dict[str, Any]:
    values = {**message.values, "updated_at": now}
    return {"b_id": message.id, **{f"b_{name}": values[name] for name in _WRITTEN}}


_UPDATE_CALLBACK = (
    update(delivery_reports)
    .where(delivery_reports.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        processed_at=bindparam("b_processed_at", type_=delivery_reports.c.processed_at.type),
        error=bindparam("b_error"),
        report_count=bindparam("b_report_count"),
        next_check_at=bindparam("b_next_check_at", type_=delivery_reports.c.next_check_at.type),
    )
)
