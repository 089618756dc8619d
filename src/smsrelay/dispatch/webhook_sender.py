"""The webhook sender: turns status events into signed POSTs, retried until they land.

One loop, two steps, both grouped (one transaction per batch):

    scan:    new `status` events -> a pending delivery per subscribed webhook
             (and the suppression-list recount), with the cursor's advance
    deliver: due deliveries -> format -> sign -> Transport.send -> delivery log, retry plan

Any number of senders may run (one per `serve` or `worker` process): scans take the cursor
row's lock, deliveries are leased (SKIP LOCKED on PostgreSQL).

Delivery guarantee: at least once, with a dedupe id. Every event to every webhook has its
own id, sent as `Smsrelay-Event-Id` (and as `id` in the native body), the same on every
retry; a receiver that ignores ids it has already processed sees each event exactly once.
A POST answered 2xx is done; anything else (network error, timeout, any other status) is
tried again with exponential backoff and jitter, for `WebhookRetry.give_up_after` (24 h by
default), then the delivery is `failed`. Errors the transport marks as not retryable (an
address the outbound guard refuses, an invalid URL, a TLS failure) fail at once. Every try
is in the webhook's delivery log (`GET /v1/webhooks/{id}`).

Verifying a request (every format is signed the same way)::

    Smsrelay-Event-Id:  evt_01j0…                 dedupe id
    Smsrelay-Timestamp: 1717243200                unix seconds when this try was signed
    Smsrelay-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw_body,
                        hashlib.sha256).hexdigest()
    ok = hmac.compare_digest("v1=" + expected, signature_header)
         and abs(time.time() - int(timestamp)) <= 300

Compute the HMAC over the raw body bytes, before any JSON parsing. Reject timestamps more
than 5 minutes (`REPLAY_WINDOW_SECONDS`) from your clock: a captured request cannot be
replayed later, because changing the timestamp breaks the signature. `verify_signature`
below does exactly this. Each retry is signed afresh with a new timestamp.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.connectors.exchange import HttpRequest
from smsrelay.dispatch.transport import Transport, TransportError
from smsrelay.dispatch.webhook_formats import FormatRegistry, UnknownFormat, default_registry
from smsrelay.settings import Settings
from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.suppression import DEFAULT_THRESHOLD, failure_counter
from smsrelay.store.timestamps import utc_now
from smsrelay.store.webhooks import (
    GAP_GRACE,
    DeliveryBatch,
    DeliveryResult,
    EventHandler,
    StatusEvent,
    StatusEventFeed,
    StoredWebhook,
    claim_due_deliveries,
    enqueue_webhook_deliveries,
    list_webhooks,
    next_delivery_due,
    process_status_events,
    record_delivery_results,
)

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "Smsrelay-Event-Id"
TIMESTAMP_HEADER = "Smsrelay-Timestamp"
SIGNATURE_HEADER = "Smsrelay-Signature"
REPLAY_WINDOW_SECONDS = 300
USER_AGENT = "smsrelay-webhooks/0.1"
_ERROR_BODY_CHARS = 200


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Smsrelay-Signature` value: `v1=` + hex HMAC-SHA256 over `timestamp.body`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    *,
    timestamp: str,
    signature: str,
    now: float,
    tolerance_seconds: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """Whether a received request is genuine and fresh (what a receiver should check)."""
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - signed_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, signed_at, body), signature.strip())


@dataclass(frozen=True, slots=True)
class WebhookRetry:
    """When to try a failed delivery again: equal-jitter exponential backoff, then give up.

    The n-th retry waits between half and all of `initial_seconds * 2**(n-1)`, capped at
    `max_seconds`; a delivery still failing `give_up_after` its creation is `failed`.
    """

    initial_seconds: float = 10.0
    max_seconds: float = 3600.0
    give_up_after: timedelta = timedelta(hours=24)

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after `attempts` failed tries."""
        exponent = min(max(0, attempts - 1), 64)
        step = min(self.max_seconds, self.initial_seconds * 2.0**exponent)
        return step / 2 + rng.uniform(0, step / 2)


def plan_after_failure(
    attempts: int,
    created_at: datetime,
    at: datetime,
    retry: WebhookRetry,
    rng: random.Random,
    *,
    retryable: bool = True,
) -> tuple[str, datetime | None]:
    """The state after a failed try (`pending` with its next time, or `failed`); pure."""
    if not retryable or at - created_at >= retry.give_up_after:
        return "failed", None
    return "pending", at + timedelta(seconds=retry.delay(attempts, rng))


@dataclass(frozen=True, slots=True)
class _Try:
    status_code: int | None
    error: str | None
    retryable: bool
    duration_ms: int
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Fans status events out to webhooks and posts them, until stopped."""

    def __init__(
        self,
        database: Database,
        secret_box: SecretBox,
        transport: Transport,
        *,
        formats: FormatRegistry | None = None,
        retry: WebhookRetry | None = None,
        clock: Callable[[], datetime] = utc_now,
        poll_interval_seconds: float = 0.2,
        suppress_after: int = DEFAULT_THRESHOLD,
        batch_size: int = 200,
        concurrency: int = 16,
        timeout_seconds: float = 10.0,
        lease_seconds: float = 60.0,
        gap_grace: timedelta = GAP_GRACE,
        rng: random.Random | None = None,
    ) -> None:
        self.database = database
        self.secret_box = secret_box
        self.transport = transport
        self.formats = formats or default_registry()
        self.retry = retry or WebhookRetry()
        self.poll_interval_seconds = poll_interval_seconds
        self.batch_size = batch_size
        self.timeout_seconds = timeout_seconds
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(concurrency)
        self._feed = StatusEventFeed(gap_grace=gap_grace)
        self._handlers: list[EventHandler] = [
            self._enqueue,
            failure_counter(database, threshold=suppress_after),
        ]
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Wake the sender now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Scan and deliver until `stop` is set."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                busy = False
                try:
                    busy = await self._step(self._clock())
                except Exception:
                    log.exception("webhook sender step failed; trying again")
                if busy:
                    continue
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopped, woken},
                    timeout=self.poll_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            stopped.cancel()

    async def run_once(self, now: datetime | None = None) -> int:
        """Scan every new event and post every due delivery once; returns how many of each."""
        at = now or self._clock()
        handled = 0
        while True:
            count, more = await process_status_events(
                self.database, self._feed, self._handlers, now=at
            )
            handled += count
            if not more:
                break
        return handled + await self.deliver_due(at)

    async def _step(self, now: datetime) -> bool:
        _, more_events = await process_status_events(
            self.database, self._feed, self._handlers, now=now
        )
        posted = await self.deliver_due(now)
        return more_events or posted >= self.batch_size

    async def _enqueue(
        self, conn: AsyncConnection, events: Sequence[StatusEvent], now: datetime
    ) -> None:
        await enqueue_webhook_deliveries(conn, self.database, events, now)

    async def deliver_due(self, now: datetime) -> int:
        """Post the deliveries due at `now` (one claim); returns how many were tried."""
        due_at = await next_delivery_due(self.database)
        if due_at is None or due_at > now:
            return 0
        batches = await claim_due_deliveries(
            self.database,
            now=now,
            limit=self.batch_size,
            lease_seconds=self.lease_seconds,
            max_batch=self.formats.max_batch,
        )
        if not batches:
            return 0
        hooks = {w.id: w for w in await list_webhooks(self.database, self.secret_box)}
        tried = await asyncio.gather(
            *(self._post(batch, hooks.get(batch.webhook_id)) for batch in batches)
        )
        results = [result for batch_results in tried for result in batch_results]
        await record_delivery_results(self.database, results)
        return len(results)

    async def _post(
        self, batch: DeliveryBatch, webhook: StoredWebhook | None
    ) -> list[DeliveryResult]:
        if webhook is None:  # deleted meanwhile: its deliveries are gone too
            return []
        async with self._limit:
            outcome = await self._send(batch, webhook)
        at = self._clock()
        results = []
        for delivery in batch.deliveries:
            if outcome.skipped:
                state, next_at = "skipped", None
            elif outcome.ok:
                state, next_at = "delivered", None
            else:
                state, next_at = plan_after_failure(
                    delivery.attempts + 1,
                    delivery.created_at,
                    at,
                    self.retry,
                    self._rng,
                    retryable=outcome.retryable,
                )
            results.append(
                DeliveryResult(
                    delivery_id=delivery.id,
                    at=at,
                    state=state,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    next_attempt_at=next_at,
                )
            )
        return results

    async def _send(self, batch: DeliveryBatch, webhook: StoredWebhook) -> _Try:
        events = [delivery.event for delivery in batch.deliveries]
        try:
            body, content_type = self.formats.get(batch.format).render(events, webhook)
        except UnknownFormat as exc:
            return _Try(None, str(exc), retryable=True, duration_ms=0)
        if not body:  # the format has nothing to tell this receiver about these events
            return _Try(None, None, retryable=False, duration_ms=0, skipped=True)
        event_id = events[0].id if len(events) == 1 else "evb_" + events[0].id.removeprefix("evt_")
        timestamp = int(self._clock().timestamp())
        headers: list[tuple[str, str]] = [
            ("Content-Type", content_type),
            ("User-Agent", USER_AGENT),
            (EVENT_ID_HEADER, event_id),
            (TIMESTAMP_HEADER, str(timestamp)),
        ]
        if webhook.secret:
            headers.append((SIGNATURE_HEADER, sign(webhook.secret, timestamp, body)))
        request = HttpRequest("POST", webhook.url, tuple(headers), body)
        started = time.monotonic()
        try:
            response = await self.transport.send(request, timeout=self.timeout_seconds)
        except TransportError as exc:
            return _Try(None, str(exc), exc.retryable, _elapsed_ms(started))
        duration = _elapsed_ms(started)
        if 200 <= response.status < 300:
            return _Try(response.status, None, True, duration)
        snippet = response.body[:_ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
        error = f"HTTP {response.status}" + (f": {snippet}" if snippet else "")
        return _Try(response.status, error, True, duration)


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


def webhook_sender_for(
    database: Database, secret_box: SecretBox, transport: Transport, settings: Settings
) -> WebhookSender:
    """The sender as configured by `settings` (retry schedule, suppression threshold)."""
    # Read with defaults: these knobs are optional in Settings.
    retry = WebhookRetry(
        initial_seconds=settings.webhook_retry_initial_seconds,
        max_seconds=settings.webhook_retry_max_seconds,
        give_up_after=timedelta(hours=settings.webhook_retry_hours),
    )
    return WebhookSender(
        database,
        secret_box,
        transport,
        retry=retry,
        poll_interval_seconds=settings.poll_interval_seconds,
        suppress_after=settings.suppress_after_failures,
    )
