"""Webhooks at rest: subscriptions, the status-event feed, durable deliveries and their log.

How an event reaches a webhook, durably and without touching the code that writes statuses:

1. Whoever changes a message's status writes a `message_events` row of kind `status`
   (record_attempts, the delivery mapper, cancel, the unconfirmed sweep).
2. `process_status_events` reads those rows past a persisted high-water mark
   (`event_cursors`) and hands them to handlers inside one transaction, together with the
   cursor's advance. `enqueue_webhook_deliveries` is one handler: a `webhook_deliveries`
   row per event per subscribed webhook, unique on (webhook, event), so seeing an event
   twice creates one delivery.
3. `claim_due_deliveries` leases due rows to one sender; `record_delivery_results` writes
   each try to the delivery log and schedules the next one.

PostgreSQL hands out event ids when rows are inserted, not when they commit, so a scan may
see event 105 while 103 is still in flight. The cursor therefore only moves up to the first
hole; a hole still there after `gap_grace` is taken to be a rolled-back transaction and
passed. Events above a hole are looked at again on the next scan, which is harmless
because every handler is idempotent.
"""

from __future__ import annotations

import secrets as token_source
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import AnyRow, Database, insert_ignoring_duplicates
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import (
    connectors,
    event_cursors,
    message_events,
    messages,
    provider_ids,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)
from smsrelay.store.timestamps import utc_now

# The status changes a webhook can subscribe to; "*" means all of them.
EVENT_STATUSES: tuple[str, ...] = (
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "unconfirmed",
    "canceled",
    "dispatch_error",
)
ALL_EVENTS = "*"
WEBHOOK_SCOPES: tuple[str, ...] = ("all", "named")
WEBHOOK_CURSOR = "webhooks"
GAP_GRACE = timedelta(seconds=30)
_CHUNK = 1000


# ---------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A webhook subscription. `secret` (decrypted) signs its requests; never shown again."""

    id: str
    url: str
    format: str
    events: tuple[str, ...]
    scope: str
    active: bool
    created_at: datetime
    secret: str | None = field(default=None, repr=False)

    def wants(self, status: str, message_webhook_id: str | None) -> bool:
        """Whether an event with `status`, of a message naming `message_webhook_id`, goes here."""
        if not self.active or status not in EVENT_STATUSES:
            return False
        if ALL_EVENTS not in self.events and status not in self.events:
            return False
        return self.scope == "all" or message_webhook_id == self.id


def new_webhook_secret() -> str:
    """A new random signing secret."""
    return "whsec_" + token_source.token_urlsafe(32)


def _stored(row: AnyRow, box: SecretBox | None) -> StoredWebhook:
    secret = None
    if box is not None and row.secret is not None:
        secret = box.open(row.secret).get("secret")
    return StoredWebhook(
        id=row.id,
        url=row.url,
        format=row.format,
        events=tuple(row.events or ()),
        scope=row.scope,
        active=bool(row.active),
        created_at=row.created_at,
        secret=secret,
    )


async def create_webhook(
    db: Database,
    box: SecretBox,
    *,
    url: str,
    events: Sequence[str],
    format: str,
    scope: str,
    secret: str,
    now: datetime | None = None,
) -> StoredWebhook:
    """Save a new webhook; the caller has validated the values."""
    webhook = StoredWebhook(
        id="wh_" + new_message_id().lower(),
        url=url,
        format=format,
        events=tuple(events),
        scope=scope,
        active=True,
        created_at=now or utc_now(),
        secret=secret,
    )
    async with db.transaction() as conn:
        await conn.execute(
            insert(webhooks).values(
                id=webhook.id,
                url=webhook.url,
                format=webhook.format,
                events=list(webhook.events),
                scope=webhook.scope,
                active=True,
                secret=box.seal({"secret": secret}),
                created_at=webhook.created_at,
            )
        )
    return webhook


async def list_webhooks(db: Database, box: SecretBox | None = None) -> list[StoredWebhook]:
    """Every webhook, oldest first (secrets decrypted only when `box` is given)."""
    async with db.connect() as conn:
        rows = await conn.execute(select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id))
        return [_stored(row, box) for row in rows]


async def get_webhook(
    db: Database, webhook_id: str, box: SecretBox | None = None
) -> StoredWebhook | None:
    """One webhook, or None."""
    async with db.connect() as conn:
        row = (await conn.execute(select(webhooks).where(webhooks.c.id == webhook_id))).first()
    return _stored(row, box) if row is not None else None


async def delete_webhook(db: Database, webhook_id: str) -> bool:
    """Delete a webhook with its pending deliveries and log; False if it did not exist."""
    async with db.transaction() as conn:
        result = await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    return bool(result.rowcount)


async def reencrypt_webhook_secrets(db: Database, box: SecretBox) -> int:
    """Re-seal every webhook secret with the newest key (key rotation); returns how many."""
    async with db.transaction() as conn:
        rows = (
            await conn.execute(
                select(webhooks.c.id, webhooks.c.secret).where(webhooks.c.secret.is_not(None))
            )
        ).all()
        if rows:
            await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == bindparam("b_id"))
                .values(secret=bindparam("b_secret")),
                [{"b_id": row.id, "b_secret": box.rotate(row.secret)} for row in rows],
            )
    return len(rows)


# ---------------------------------------------------------------- the status-event feed


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A `status` history entry with the message it belongs to, as handlers see it."""

    event_id: int
    message_id: str
    status: str
    at: datetime
    detail: Mapping[str, Any]
    to: str
    connector_id: int
    connector_name: str | None
    sender_name: str | None
    sender_id: str | None
    campaign_id: str | None
    webhook_id: str | None
    segments: int
    failure_reason: str | None  # the message's, now
    params: Mapping[str, str]
    provider_ids: tuple[str, ...]


EventHandler = Callable[[AsyncConnection, Sequence[StatusEvent], datetime], Awaitable[None]]


class StatusEventFeed:
    """One reader's position over `message_events`, with what it remembers between scans.

    The durable position is the cursor row `name`; in memory are the event ids above it
    already handled (so they are not handled again on every scan) and when each hole in
    the id sequence was first seen.
    """

    def __init__(self, name: str = WEBHOOK_CURSOR, *, gap_grace: timedelta = GAP_GRACE) -> None:
        self.name = name
        self.gap_grace = gap_grace
        self._handled: set[int] = set()
        self._holes: dict[int, datetime] = {}  # first missing id -> first seen
        self._high = 0

    def needs_scan(self, newest_event_id: int | None) -> bool:
        """Whether a scan may find anything: newer events exist, or a hole may have filled."""
        return bool(self._holes) or (newest_event_id or 0) > self._high

    def settle(self, cursor: int, ids: Sequence[int], now: datetime) -> int:
        """Where the cursor may move given the ids found above it (ascending); pure-ish.

        It stops before the first hole younger than `gap_grace`; holes are remembered.
        """
        holes: dict[int, datetime] = {}
        advance, expected, blocked = cursor, cursor + 1, False
        for event_id in ids:
            if event_id > expected:
                seen = [t for start, t in self._holes.items() if expected <= start < event_id]
                first = min(seen, default=now)
                if now - first < self.gap_grace:
                    holes[expected] = first
                    blocked = True
            if not blocked:
                advance = event_id
            expected = event_id + 1
        self._holes = holes
        return advance

    def fresh(self, ids: Iterable[int]) -> set[int]:
        """The ids not handled yet by this reader."""
        return {event_id for event_id in ids if event_id not in self._handled}

    def handled(self, ids: Sequence[int], cursor: int) -> None:
        """Remember `ids` as handled (after commit) and forget everything up to `cursor`."""
        self._handled.update(ids)
        self._handled = {event_id for event_id in self._handled if event_id > cursor}
        self._high = max(self._high, cursor, *ids)


async def _locked_cursor(conn: AsyncConnection, db: Database, name: str, now: datetime) -> int:
    await conn.execute(
        insert_ignoring_duplicates(db, event_cursors).values(
            name=name, last_event_id=0, updated_at=now
        )
    )
    query = select(event_cursors.c.last_event_id).where(event_cursors.c.name == name)
    if not db.is_sqlite:
        query = query.with_for_update()
    return int((await conn.execute(query)).scalar_one())


_EVENT_COLUMNS = (
    message_events.c.id.label("event_id"),
    message_events.c.message_id,
    message_events.c.status,
    message_events.c.at,
    message_events.c.detail,
    messages.c.to,
    messages.c.connector_id,
    connectors.c.name.label("connector_name"),
    messages.c.sender_name,
    messages.c.sender_id,
    messages.c.campaign_id,
    messages.c.webhook_id,
    messages.c.segments,
    messages.c.failure_reason,
    messages.c.params,
)


async def _load_status_events(
    conn: AsyncConnection, after: int, upto: int, wanted: set[int]
) -> list[StatusEvent]:
    query = (
        select(*_EVENT_COLUMNS)
        .join(messages, messages.c.id == message_events.c.message_id)
        .outerjoin(connectors, connectors.c.id == messages.c.connector_id)
        .where(message_events.c.id > after)
        .where(message_events.c.id <= upto)
        .where(message_events.c.kind == "status")
        .order_by(message_events.c.id)
    )
    rows = [row for row in await conn.execute(query) if row.event_id in wanted]
    ids: dict[str, list[str]] = {}
    message_ids = sorted({row.message_id for row in rows})
    for start in range(0, len(message_ids), _CHUNK):
        found = await conn.execute(
            select(provider_ids.c.message_id, provider_ids.c.provider_id)
            .where(provider_ids.c.message_id.in_(message_ids[start : start + _CHUNK]))
            .order_by(provider_ids.c.message_id, provider_ids.c.provider_id)
        )
        for message_id, provider_id in found:
            ids.setdefault(message_id, []).append(provider_id)
    return [
        StatusEvent(
            event_id=row.event_id,
            message_id=row.message_id,
            status=row.status,
            at=row.at,
            detail=dict(row.detail or {}),
            to=row.to,
            connector_id=row.connector_id,
            connector_name=row.connector_name,
            sender_name=row.sender_name,
            sender_id=row.sender_id,
            campaign_id=row.campaign_id,
            webhook_id=row.webhook_id,
            segments=row.segments,
            failure_reason=row.failure_reason,
            params=dict(row.params or {}),
            provider_ids=tuple(ids.get(row.message_id, ())),
        )
        for row in rows
    ]


async def process_status_events(
    db: Database,
    feed: StatusEventFeed,
    handlers: Sequence[EventHandler],
    *,
    now: datetime,
    limit: int = 1000,
) -> tuple[int, bool]:
    """Hand new status events to `handlers` in one transaction with the cursor's advance.

    Returns (events handled, more may be waiting). A cheap read first: when nothing is new
    no write transaction is opened.
    """
    async with db.connect() as conn:
        newest = (await conn.execute(select(func.max(message_events.c.id)))).scalar()
    if not feed.needs_scan(newest):
        return 0, False
    async with db.transaction() as conn:
        cursor = await _locked_cursor(conn, db, feed.name, now)
        ids = list(
            (
                await conn.execute(
                    select(message_events.c.id)
                    .where(message_events.c.id > cursor)
                    .order_by(message_events.c.id)
                    .limit(limit)
                )
            ).scalars()
        )
        advance = feed.settle(cursor, ids, now)
        fresh = feed.fresh(ids)
        events: list[StatusEvent] = []
        if fresh:
            events = await _load_status_events(conn, cursor, ids[-1], fresh)
            if events:
                for handler in handlers:
                    await handler(conn, events, now)
        if advance > cursor:
            await conn.execute(
                update(event_cursors)
                .where(event_cursors.c.name == feed.name)
                .values(last_event_id=advance, updated_at=now)
            )
    feed.handled(ids, advance)
    # More may wait only if this scan got somewhere; a hole holding the cursor is left
    # to the next poll rather than spun on.
    return len(events), len(ids) >= limit and (advance > cursor or bool(fresh))


# ---------------------------------------------------------------- events as webhooks see them


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One status change of one message, as it is posted to webhooks.

    `id` is the dedupe id: the same on every retry of this event to this webhook.
    `detail` is the status entry's own detail (`from`, `reason`, `error_code`, …).
    """

    id: str
    type: str  # message.<status>
    created_at: datetime
    status: str
    previous_status: str | None
    status_at: datetime
    message_id: str
    to: str
    connector: str | None
    sender: str | None
    sender_id: str | None
    campaign_id: str | None
    webhook_id: str | None
    provider_ids: tuple[str, ...]
    failure_reason: str | None
    error_code: str | None
    segments: int
    params: Mapping[str, str] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


def webhook_event(event: StatusEvent, uid: str, created_at: datetime) -> WebhookEvent:
    """The webhook view of a status event (pure)."""
    failure_reason = None
    if event.status in ("failed", "undelivered", "dispatch_error"):
        failure_reason = event.detail.get("reason") or event.failure_reason
    error_code = event.detail.get("error_code")
    return WebhookEvent(
        id=uid,
        type=f"message.{event.status}",
        created_at=created_at,
        status=event.status,
        previous_status=event.detail.get("from"),
        status_at=event.at,
        message_id=event.message_id,
        to=event.to,
        connector=event.connector_name,
        sender=event.sender_name,
        sender_id=event.sender_id,
        campaign_id=event.campaign_id,
        webhook_id=event.webhook_id,
        provider_ids=event.provider_ids,
        failure_reason=str(failure_reason) if failure_reason is not None else None,
        error_code=str(error_code) if error_code is not None else None,
        segments=event.segments,
        params=dict(event.params),
        detail=dict(event.detail),
    )


def _event_json(event: WebhookEvent) -> dict[str, Any]:
    return {
        "type": event.type,
        "status": event.status,
        "previous_status": event.previous_status,
        "status_at": event.status_at.isoformat(),
        "message_id": event.message_id,
        "to": event.to,
        "connector": event.connector,
        "sender": event.sender,
        "sender_id": event.sender_id,
        "campaign_id": event.campaign_id,
        "webhook_id": event.webhook_id,
        "provider_ids": list(event.provider_ids),
        "failure_reason": event.failure_reason,
        "error_code": event.error_code,
        "segments": event.segments,
        "params": dict(event.params),
        "detail": dict(event.detail),
    }


def _event_from_json(uid: str, created_at: datetime, data: Mapping[str, Any]) -> WebhookEvent:
    return WebhookEvent(
        id=uid,
        type=data["type"],
        created_at=created_at,
        status=data["status"],
        previous_status=data.get("previous_status"),
        status_at=datetime.fromisoformat(data["status_at"]),
        message_id=data["message_id"],
        to=data["to"],
        connector=data.get("connector"),
        sender=data.get("sender"),
        sender_id=data.get("sender_id"),
        campaign_id=data.get("campaign_id"),
        webhook_id=data.get("webhook_id"),
        provider_ids=tuple(data.get("provider_ids") or ()),
        failure_reason=data.get("failure_reason"),
        error_code=data.get("error_code"),
        segments=int(data.get("segments") or 1),
        params=dict(data.get("params") or {}),
        detail=dict(data.get("detail") or {}),
    )


def new_event_uid() -> str:
    """A new dedupe id for one event to one webhook."""
    return "evt_" + new_message_id().lower()


async def enqueue_webhook_deliveries(
    conn: AsyncConnection, db: Database, events: Sequence[StatusEvent], now: datetime
) -> int:
    """A pending delivery per event per webhook that wants it; an existing one is kept.

    An event is for every active webhook subscribed to its status, created before it,
    whose scope is `all` or which the message names. Returns how many rows were offered.
    """
    subscribed = [
        _stored(row, None) for row in await conn.execute(select(webhooks).where(webhooks.c.active))
    ]
    if not subscribed:
        return 0
    rows: list[dict[str, Any]] = []
    for event in events:
        for webhook in subscribed:
            if event.at < webhook.created_at or not webhook.wants(event.status, event.webhook_id):
                continue
            uid = new_event_uid()
            rows.append(
                {
                    "webhook_id": webhook.id,
                    "event_id": event.event_id,
                    "uid": uid,
                    "message_id": event.message_id,
                    "event": _event_json(webhook_event(event, uid, now)),
                    "attempts": 0,
                    "next_attempt_at": now,
                    "state": "pending",
                    "created_at": now,
                }
            )
    for start in range(0, len(rows), _CHUNK):
        await conn.execute(
            insert_ignoring_duplicates(db, webhook_deliveries), rows[start : start + _CHUNK]
        )
    return len(rows)


# ---------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """One event to one webhook, leased for a try."""

    id: int
    webhook_id: str
    event: WebhookEvent
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryBatch:
    """Deliveries posted in one request (always one for formats that carry one event)."""

    batch_id: int
    webhook_id: str
    format: str
    deliveries: tuple[DueDelivery, ...]


def group_batches(
    rows: Sequence[AnyRow], max_batch: Callable[[str], int], *, cut: bool
) -> list[DeliveryBatch]:
    """Group claimed rows into requests: a batch fixed at its first try keeps its members.

    `cut` says the claim hit its limit, so the last pre-formed batch may be incomplete: it
    is left for the next claim.
    """
    formed: dict[int, list[AnyRow]] = {}
    loose: dict[str, list[AnyRow]] = {}
    for row in rows:
        if row.batch_id is not None:
            formed.setdefault(row.batch_id, []).append(row)
        else:
            loose.setdefault(row.webhook_id, []).append(row)
    if cut and rows and rows[-1].batch_id is not None and len(formed) + len(loose) > 1:
        formed.pop(rows[-1].batch_id)
    groups: list[list[AnyRow]] = list(formed.values())
    for members in loose.values():
        size = max(1, max_batch(members[0].format))
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    batches = []
    for members in groups:
        first = members[0]
        batch_id = first.batch_id if first.batch_id is not None else min(r.id for r in members)
        batches.append(
            DeliveryBatch(
                batch_id=batch_id,
                webhook_id=first.webhook_id,
                format=first.format,
                deliveries=tuple(
                    DueDelivery(
                        id=r.id,
                        webhook_id=r.webhook_id,
                        event=_event_from_json(r.uid, r.created_at, r.event),
                        attempts=r.attempts,
                        created_at=r.created_at,
                    )
                    for r in members
                ),
            )
        )
    return batches


async def claim_due_deliveries(
    db: Database,
    *,
    now: datetime,
    limit: int,
    lease_seconds: float,
    max_batch: Callable[[str], int],
) -> list[DeliveryBatch]:
    """Lease due pending deliveries, grouped into requests (`max_batch` by format name).

    A leased delivery is due again when the lease ends (its sender died); otherwise
    `record_delivery_results` reschedules or finishes it.
    """
    due = (
        select(
            webhook_deliveries.c.id,
            webhook_deliveries.c.webhook_id,
            webhook_deliveries.c.uid,
            webhook_deliveries.c.event,
            webhook_deliveries.c.attempts,
            webhook_deliveries.c.created_at,
            webhook_deliveries.c.batch_id,
            webhooks.c.format,
        )
        .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
        .where(webhook_deliveries.c.state == "pending")
        .where(webhook_deliveries.c.next_attempt_at <= now)
        .order_by(
            webhook_deliveries.c.next_attempt_at,
            func.coalesce(webhook_deliveries.c.batch_id, webhook_deliveries.c.id),
            webhook_deliveries.c.id,
        )
        .limit(limit)
    )
    if not db.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=webhook_deliveries)
    lease_end = now + timedelta(seconds=lease_seconds)
    async with db.transaction() as conn:
        rows = (await conn.execute(due)).all()
        batches = group_batches(rows, max_batch, cut=len(rows) >= limit)
        leases = [
            {"b_id": d.id, "b_batch": batch.batch_id, "b_due": lease_end}
            for batch in batches
            for d in batch.deliveries
        ]
        if leases:
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == bindparam("b_id"))
                .values(batch_id=bindparam("b_batch"), next_attempt_at=bindparam("b_due")),
                leases,
            )
    return batches


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one try of one delivery.

    `state` is `delivered`, `failed` (given up), `skipped` (the format had nothing to post)
    or `pending` (tried again at `next_attempt_at`).
    """

    delivery_id: int
    at: datetime
    state: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


async def record_delivery_results(db: Database, results: Sequence[DeliveryResult]) -> None:
    """Write tries to the delivery log and move their deliveries on, in one transaction."""
    if not results:
        return
    ids = sorted({r.delivery_id for r in results})
    async with db.transaction() as conn:
        alive: set[int] = set()
        for start in range(0, len(ids), _CHUNK):
            alive.update(
                (
                    await conn.execute(
                        select(webhook_deliveries.c.id).where(
                            webhook_deliveries.c.id.in_(ids[start : start + _CHUNK])
                        )
                    )
                ).scalars()
            )
        kept = [r for r in results if r.delivery_id in alive]  # webhook deleted meanwhile
        if not kept:
            return
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == bindparam("b_id"))
            .values(
                attempts=webhook_deliveries.c.attempts + 1,
                state=bindparam("b_state"),
                last_status=bindparam("b_status"),
                last_error=bindparam("b_error"),
                next_attempt_at=bindparam(
                    "b_next", type_=webhook_deliveries.c.next_attempt_at.type
                ),
                finished_at=bindparam("b_finished", type_=webhook_deliveries.c.finished_at.type),
            ),
            [
                {
                    "b_id": r.delivery_id,
                    "b_state": r.state,
                    "b_status": r.status_code,
                    "b_error": r.error,
                    "b_next": r.next_attempt_at if r.state == "pending" else None,
                    "b_finished": None if r.state == "pending" else r.at,
                }
                for r in kept
            ],
        )
        await conn.execute(
            insert(webhook_attempts),
            [
                {
                    "delivery_id": r.delivery_id,
                    "at": r.at,
                    "status_code": r.status_code,
                    "error": r.error,
                    "duration_ms": r.duration_ms,
                }
                for r in kept
            ],
        )


async def next_delivery_due(db: Database) -> datetime | None:
    """When the earliest pending delivery is due (None when none is pending)."""
    async with db.connect() as conn:
        due: datetime | None = (
            await conn.execute(
                select(func.min(webhook_deliveries.c.next_attempt_at)).where(
                    webhook_deliveries.c.state == "pending"
                )
            )
        ).scalar()
    return due


# ---------------------------------------------------------------- the delivery log


@dataclass(frozen=True, slots=True)
class DeliveryTry:
    """One POST of a delivery: HTTP status or error, and how long it took."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    """A delivery with its tries, newest delivery first in lists."""

    id: str
    message_id: str
    type: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    last_error: str | None
    tries: tuple[DeliveryTry, ...]


async def recent_deliveries(db: Database, webhook_id: str, *, limit: int = 50) -> list[DeliveryLog]:
    """A webhook's most recent deliveries, each with its tries in order."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(webhook_deliveries)
                .where(webhook_deliveries.c.webhook_id == webhook_id)
                .order_by(webhook_deliveries.c.id.desc())
                .limit(limit)
            )
        ).all()
        tries: dict[int, list[DeliveryTry]] = {}
        if rows:
            found = await conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.delivery_id.in_([row.id for row in rows]))
                .order_by(webhook_attempts.c.id)
            )
            for t in found:
                tries.setdefault(t.delivery_id, []).append(
                    DeliveryTry(
                        at=t.at, status_code=t.status_code, error=t.error, duration_ms=t.duration_ms
                    )
                )
    return [
        DeliveryLog(
            id=row.uid,
            message_id=row.message_id,
            type=row.event.get("type", ""),
            state=row.state,
            attempts=row.attempts,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at if row.state == "pending" else None,
            finished_at=row.finished_at,
            last_status=row.last_status,
            last_error=row.last_error,
            tries=tuple(tries.get(row.id, ())),
        )
        for row in rows
    ]
