"""The dispatcher: claims due messages and sends them through their connectors.

One pass for a connector is a pipeline of small named steps:

    claim_due_messages -> skip already accepted -> access token -> group by batch key
      -> render -> rate limit + concurrency -> transport.send -> parse_send_response
      -> attempt records -> group-committed writer

Every connector with due messages is drained by its own task, so a slow or throttled
provider never holds up the others. While one claim is sent and recorded, the next one is
already being claimed (unlimited connectors only), so the database and the network
overlap. Decisions (what a response means, when to retry, what to record) are pure
functions in `connectors` and `dispatch.attempts`; this module only wires them to the
database, the clock and the transport.

At-least-once: a message is marked `sent` only after the provider's answer is recorded. If
a worker dies between the provider accepting a request and the record being committed,
the lease expires and the message is sent again (unless a delivery report already showed
the provider has it: `accepted_before`). Timeouts are retried too, and a provider may have
accepted a request that timed out. Both are bounded by `retry.max_attempts`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from smsrelay.connectors.definition import AuthOAuth2, ConnectorDefinition
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.connectors.rendering import (
    CompiledConnector,
    RenderEnvironment,
    batch_key,
    compile_connector,
    render_batch,
)
from smsrelay.dispatch.attempt_writer import AttemptWriter
from smsrelay.dispatch.attempts import (
    exchange_detail,
    record_already_accepted,
    record_credentials_failing,
    record_render_failure,
    records_for_exchange,
)
from smsrelay.dispatch.lease_keeper import ConnectorLeaseKeeper, connector_lease_seconds
from smsrelay.dispatch.oauth_tokens import CredentialsError, OAuthTokenCache
from smsrelay.dispatch.rate_limit import Clock, ConnectorLimiter, Sleep
from smsrelay.dispatch.transport import Transport, TransportError
from smsrelay.metrics import ConnectorMeter, connector_meter, error_reason, status_class
from smsrelay.settings import Settings
from smsrelay.store.connectors import get_connector_by_id
from smsrelay.store.database import Database
from smsrelay.store.messages import (
    AttemptRecord,
    ClaimedMessage,
    claim_due_messages,
    due_connector_ids,
    expire_unconfirmed,
    release_lease,
)
from smsrelay.store.notifications import OutboxListener
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

# How long a stopping dispatcher lets requests in flight finish before cancelling them.
STOP_GRACE_SECONDS = 20.0
# How often `run` looks for sent messages whose delivery-report window has passed.
UNCONFIRMED_CHECK_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ActiveConnector:
    """A connector version ready to send: compiled templates, limiter, render environment."""

    id: int
    version: int
    definition: ConnectorDefinition
    compiled: CompiledConnector
    limiter: ConnectorLimiter
    callback_url: str
    # How close to its lease's expiry a request is no longer sent (`_lease_running_out`).
    lease_margin: timedelta
    # The render environment without an access token, the same for every request.
    plain_environment: RenderEnvironment
    # Its Prometheus metrics (requests, their time, attempt outcomes).
    meter: ConnectorMeter

    @property
    def token_key(self) -> tuple[int, int]:
        """The OAuth2 token cache key: a new version may carry new credentials."""
        return (self.id, self.version)

    def environment(self, access_token: str | None) -> RenderEnvironment:
        """What rendering needs besides the messages."""
        if access_token is None:
            return self.plain_environment
        return RenderEnvironment(
            secrets=self.definition.secrets,
            callback_url=self.callback_url,
            access_token=access_token,
        )


def group_for_requests(
    compiled: CompiledConnector, claimed: Sequence[ClaimedMessage]
) -> list[list[ClaimedMessage]]:
    """Split messages into the groups that share one request (batch key, batch size)."""
    size = compiled.batch_size
    if size <= 1:
        return [[message] for message in claimed]
    by_key: dict[tuple[object, ...], list[ClaimedMessage]] = {}
    for message in claimed:
        by_key.setdefault(batch_key(compiled, message.as_outbound()), []).append(message)
    return [group[i : i + size] for group in by_key.values() for i in range(0, len(group), size)]


def claim_limit(definition: ConnectorDefinition, settings: Settings) -> int:
    """How many messages to claim at once for this connector.

    No more than the rate limit lets us send in a quarter of a lease: a lease that expires
    while its messages still wait for tokens would let another worker claim and send them
    too, and a worker sends nothing in the last part of a lease (`_lease_running_out`).
    """
    limit = settings.claim_batch
    per_second = definition.rate_limit.per_second
    if per_second is not None:
        per_quarter_lease = int(per_second * settings.lease_seconds / 4)
        limit = min(limit, per_quarter_lease + definition.rate_limit.effective_burst)
    return max(1, limit)


class Dispatcher:
    """Sends due messages through their connectors and records every attempt."""

    def __init__(
        self,
        database: Database,
        secret_box: SecretBox,
        transport: Transport,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        writer: AttemptWriter | None = None,
        tokens: OAuthTokenCache | None = None,
        on_unconfirmed: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.database = database
        self.secret_box = secret_box
        self.transport = transport
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._sleep = sleep
        self.writer = writer or AttemptWriter(database, self.worker_id)
        self.tokens = tokens or OAuthTokenCache(transport, clock=lambda: self._clock().timestamp())
        self._connectors: dict[int, ActiveConnector] = {}
        self._tasks: dict[int, asyncio.Task[int]] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._on_unconfirmed = on_unconfirmed
        self._next_expiry = 0.0
        # Rate-limited connectors are sent for by one worker at a time (lease_keeper).
        self.leases = ConnectorLeaseKeeper(
            database,
            self.worker_id,
            seconds=connector_lease_seconds(settings.lease_seconds),
            clock=clock,
            monotonic=monotonic,
        )

    # ------------------------------------------------------------ loop

    def notify(self) -> None:
        """Wake the dispatcher now (the API calls this after queueing messages)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; then finish requests in flight and release leases."""
        # The caller's event itself: a send about to start sees a stop at once.
        self._stop = stop
        stopped = asyncio.create_task(stop.wait())
        # PostgreSQL: the API NOTIFYs when it queues messages; polling stays the fallback.
        listening = asyncio.create_task(OutboxListener(self.database, self.notify).run(stop))
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._start_due_connectors(self._clock())
                    await self._expire_overdue_reports()
                except Exception:
                    log.exception("a dispatch pass failed (database unreachable?); trying again")
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopped, woken},
                    timeout=self.settings.poll_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            stopped.cancel()
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await self._shutdown()

    async def run_once(self, now: datetime | None = None) -> int:
        """Dispatch every message due at `now` and record the results; return how many."""
        at = now or self._clock()
        connector_ids = await due_connector_ids(self.database, at)
        counts = await asyncio.gather(
            *(self._drain_connector(cid, lambda: at) for cid in connector_ids)
        )
        await self.writer.flush()
        return sum(counts)

    async def _start_due_connectors(self, now: datetime) -> None:
        for connector_id in await due_connector_ids(self.database, now):
            running = self._tasks.get(connector_id)
            if running is None or running.done():
                task = asyncio.create_task(self._drain_logged(connector_id))
                self._tasks[connector_id] = task
                task.add_done_callback(functools.partial(self._forget_task, connector_id))

    async def _expire_overdue_reports(self) -> None:
        """Sent messages past their delivery-report window become `unconfirmed`."""
        if time.monotonic() < self._next_expiry:
            return
        self._next_expiry = time.monotonic() + UNCONFIRMED_CHECK_SECONDS
        while ids := await expire_unconfirmed(self.database, now=self._clock()):
            if self._on_unconfirmed is not None:
                await self._on_unconfirmed(ids)

    def _forget_task(self, connector_id: int, task: asyncio.Task[int]) -> None:
        if self._tasks.get(connector_id) is task:
            del self._tasks[connector_id]

    async def _drain_logged(self, connector_id: int) -> int:
        try:
            return await self._drain_connector(connector_id, self._clock)
        except Exception:
            # The claimed messages stay leased and come back when the lease expires.
            log.exception("dispatching connector %s failed", connector_id)
            return 0

    async def _shutdown(self) -> None:
        self._stop.set()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.writer.aclose()
        # Claimed but never sent: hand them back now rather than at lease expiry.
        await release_lease(self.database, self.worker_id)
        await self.leases.release_all({c.id: c.limiter for c in self._connectors.values()})

    # ------------------------------------------------------------ one connector

    async def _drain_connector(self, connector_id: int, now: Callable[[], datetime]) -> int:
        """Claim and send this connector's due messages until none are left."""
        handled = 0
        leased: ActiveConnector | None = None
        ahead: asyncio.Task[tuple[list[ClaimedMessage], int]] | None = None
        try:
            while not self._stop.is_set():
                connector = await self._active_connector(connector_id)
                if connector is None:
                    break
                if connector.limiter.limited:
                    # Another worker sending for it now: its rate is that worker's to keep.
                    if not await self.leases.hold(connector.id, connector.limiter):
                        break
                    leased = connector
                if ahead is not None:
                    claimed, limit = await ahead
                    ahead = None
                else:
                    claimed, limit = await self._claim(connector, now)
                if not claimed:
                    break
                handled += len(claimed)
                if len(claimed) == limit and not connector.limiter.limited:
                    # More are due: claim them while these are sent and recorded, so the
                    # database and the sending overlap. (A rate-limited connector claims
                    # no further ahead than its rate allows.)
                    ahead = asyncio.create_task(self._claim(connector, now))
                await self._dispatch_claimed(connector, claimed)
                if len(claimed) < limit:
                    break
        finally:
            if ahead is not None:
                # Stopping: whatever it claimed is handed back with the worker's other leases.
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            if leased is not None:
                # Drained: any worker may take the connector (and its bucket) from here.
                await self.leases.release(leased.id, leased.limiter)
        return handled

    async def _claim(
        self, connector: ActiveConnector, now: Callable[[], datetime]
    ) -> tuple[list[ClaimedMessage], int]:
        """Lease the connector's next due messages to this worker; (messages, limit)."""
        limit = claim_limit(connector.definition, self.settings)
        claimed = await claim_due_messages(
            self.database,
            connector_id=connector.id,
            worker_id=self.worker_id,
            limit=limit,
            lease_seconds=self.settings.lease_seconds,
            now=now(),
        )
        return claimed, limit

    async def _active_connector(self, connector_id: int) -> ActiveConnector | None:
        """The connector's current version, compiled once per (id, version)."""
        stored = await get_connector_by_id(self.database, self.secret_box, connector_id)
        if stored is None:
            self._connectors.pop(connector_id, None)
            return None
        cached = self._connectors.get(connector_id)
        if cached is not None and cached.version == stored.version:
            return cached
        definition = stored.definition
        limiter = (
            cached.limiter
            if cached is not None and cached.definition.rate_limit == definition.rate_limit
            else ConnectorLimiter(definition.rate_limit, clock=self._monotonic, sleep=self._sleep)
        )
        callback_url = f"{self.settings.base_url}/dlr/{stored.dlr_token}"
        margin = min(definition.request.timeout_seconds, self.settings.lease_seconds / 2)
        active = ActiveConnector(
            id=stored.id,
            version=stored.version,
            definition=definition,
            compiled=compile_connector(definition),
            limiter=limiter,
            callback_url=callback_url,
            lease_margin=timedelta(seconds=margin),
            plain_environment=RenderEnvironment(
                secrets=definition.secrets, callback_url=callback_url
            ),
            meter=connector_meter(definition.name),
        )
        self._connectors[connector_id] = active
        return active

    async def _dispatch_claimed(
        self, connector: ActiveConnector, claimed: Sequence[ClaimedMessage]
    ) -> None:
        fresh = await self._skip_already_accepted(connector, claimed)
        if not fresh:
            return
        try:
            token = await self._access_token(connector)
        except CredentialsError as exc:
            await self._hold_for_credentials(connector, fresh, exc.detail)
            return
        groups = group_for_requests(connector.compiled, fresh)
        pending = iter(groups)

        async def sender() -> None:
            for group in pending:
                await self._send_group(connector, group, token)

        # As many senders as requests may be in flight: one task per request would only
        # queue at the concurrency limit (hundreds of tasks and wake-ups per claim).
        slots = min(len(groups), connector.definition.rate_limit.concurrency)
        await asyncio.gather(*(sender() for _ in range(slots)))

    async def _send_group(
        self, connector: ActiveConnector, group: Sequence[ClaimedMessage], token: str | None
    ) -> None:
        try:
            await self._render_and_send(connector, group, token)
        except Exception:
            # Whether the provider got the request is unknown: the messages stay leased and
            # are tried again when the lease expires (at-least-once), the other groups go on.
            log.exception(
                "sending %d message(s) through connector %s failed", len(group), connector.id
            )

    async def _skip_already_accepted(
        self, connector: ActiveConnector, claimed: Sequence[ClaimedMessage]
    ) -> list[ClaimedMessage]:
        """Record messages the provider already has as sent; return the others."""
        at = self._clock()
        delivery = connector.definition.delivery
        accepted = [
            record_already_accepted(m, at, delivery=delivery) for m in claimed if m.accepted_before
        ]
        await self.writer.add(accepted)
        return [m for m in claimed if not m.accepted_before]

    async def _access_token(self, connector: ActiveConnector) -> str | None:
        auth = connector.definition.request.auth
        if not isinstance(auth, AuthOAuth2):
            return None
        return await self.tokens.access_token(
            connector.token_key, auth, connector.definition.secrets
        )

    async def _hold_for_credentials(
        self,
        connector: ActiveConnector,
        messages: Sequence[ClaimedMessage],
        why: str,
        detail: dict[str, object] | None = None,
    ) -> None:
        at = self._clock()
        # Each message's hold window runs from when it was first held, as stored with it:
        # the same for every worker, and through restarts.
        retry = connector.definition.retry
        await self._record(
            connector,
            [
                record_credentials_failing(
                    m, why, retry=retry, held_since=m.held_since or at, at=at, detail=detail
                )
                for m in messages
            ],
        )

    async def _render_and_send(
        self,
        connector: ActiveConnector,
        group: Sequence[ClaimedMessage],
        token: str | None,
        *,
        refreshed: bool = False,
    ) -> None:
        """Render one request for `group`, send it and record what it meant per message."""
        rendered = render_batch(
            connector.compiled, [m.as_outbound() for m in group], connector.environment(token)
        )
        messages: Sequence[ClaimedMessage] = group
        if rendered.failures:
            failed = {message_id: error for message_id, error in rendered.failures}
            at = self._clock()
            await self._record(
                connector,
                [record_render_failure(m, failed[m.id], at) for m in group if m.id in failed],
            )
            messages = [m for m in group if m.id not in failed]
        if rendered.request is None:
            return
        await self.writer.wait_for_room()
        exchange = await self._send(connector, messages, rendered.request)
        if exchange is None:
            return  # stopping: left leased, released at shutdown
        response, error, elapsed_ms = exchange
        unauthorized = response is not None and response.status == 401
        if unauthorized and token is not None and not refreshed:
            # The token may have been revoked before its expiry: fetch a new one, resend once.
            self.tokens.invalidate(connector.token_key, token)
            try:
                fresh_token = await self._access_token(connector)
            except CredentialsError as exc:
                await self._hold_for_credentials(connector, messages, exc.detail)
                return
            await self._render_and_send(connector, messages, fresh_token, refreshed=True)
            return
        detail = exchange_detail(
            rendered.request,
            response,
            elapsed_ms=elapsed_ms,
            secrets=connector.definition.secrets,
            access_token=token,
        )
        if unauthorized:
            # Refused credentials are the connector's problem, not the messages': hold them
            # (dispatch_error) until the credentials work again instead of failing them all.
            await self._hold_for_credentials(
                connector, messages, "the provider answered 401 Unauthorized", detail
            )
            return
        await self._record(
            connector,
            records_for_exchange(
                messages,
                response,
                error,
                definition=connector.definition,
                at=self._clock(),
                rng=self._rng,
                detail=detail,
                access_token=token,
            ),
        )

    async def _record(self, connector: ActiveConnector, records: Sequence[AttemptRecord]) -> None:
        """Count the attempts' outcomes and hand them to the group-committed writer."""
        connector.meter.attempts(record.outcome for record in records)
        await self.writer.add(records)

    def _lease_running_out(
        self, connector: ActiveConnector, messages: Sequence[ClaimedMessage]
    ) -> bool:
        """Whether the messages' lease may expire before a request sent now is answered."""
        if not messages:
            return False
        if len(messages) == 1:
            expires = messages[0].lease_expires_at
        else:
            expires = min(m.lease_expires_at for m in messages)
        return expires - self._clock() < connector.lease_margin

    async def _send(
        self, connector: ActiveConnector, messages: Sequence[ClaimedMessage], request: HttpRequest
    ) -> tuple[HttpResponse | None, TransportError | None, float] | None:
        """Send under the connector's rate and concurrency limits; None if stopping."""
        limiter = connector.limiter
        units = limiter.units([m.segments for m in messages])
        async with limiter.permit(units):
            if self._stop.is_set():
                return None
            if limiter.limited and not await self.leases.hold(connector.id, limiter):
                return None  # the connector's lease was lost: its new holder sends these
            if self._lease_running_out(connector, messages):
                # Claimed more than this worker could send in time: once the lease expires
                # another worker may claim these too, so leave them to whoever does.
                return None
            started = time.perf_counter()
            # The rate is kept again where the request's bytes leave (`pace_write`).
            paced = functools.partial(limiter.pace_write, units) if limiter.limited else None
            try:
                response = await self.transport.send(
                    request,
                    timeout=connector.definition.request.timeout_seconds,
                    before_write=paced,
                )
            except TransportError as exc:
                elapsed = time.perf_counter() - started
                connector.meter.request(elapsed, error_reason(exc.reason))
                return None, exc, elapsed * 1000
            elapsed = time.perf_counter() - started
            connector.meter.request(elapsed, status_class(response.status))
            return response, None, elapsed * 1000


__all__ = ["ActiveConnector", "Dispatcher", "claim_limit", "group_for_requests"]
