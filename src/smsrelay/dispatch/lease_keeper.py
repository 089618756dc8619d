"""The connector leases one worker holds: taken before sending, renewed while sending.

A rate-limited connector is sent for by one worker at a time (`store.connector_leases`), so
its token bucket lives in that worker's memory and the limit holds exactly across any
number of workers. The keeper takes the lease before a worker claims the connector's
messages, renews it once half of it is spent (checked before every request, so a long
drain keeps it), hands the bucket over when the worker lets go, and says no when the lease
was lost: past its local deadline a worker sends nothing more for that connector.

Renewal runs beside the requests, not in front of one: a request whose token is spent
while the database is asked would otherwise go out late, together with the ones queued
behind it, and the provider would see them arrive above the rate. Only a lease past its
local deadline (the renewal failed or took too long) makes a request wait for the database.

The local deadline is measured on the monotonic clock from before the database was asked,
and ends `margin` before the expiry stored there, so the next holder can never start
before this one has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from smsrelay.dispatch.rate_limit import Clock, ConnectorLimiter
from smsrelay.store.connector_leases import (
    LeaseGrant,
    acquire_connector_lease,
    release_connector_lease,
)
from smsrelay.store.database import Database
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

# Leases are short so that a dead worker's connector is taken over quickly; they are
# renewed at half-life while its worker sends.
MAX_LEASE_SECONDS = 15.0


def connector_lease_seconds(message_lease_seconds: float) -> float:
    """How long a connector lease lasts: at most 15 s, and never longer than a message lease."""
    return max(1.0, min(MAX_LEASE_SECONDS, message_lease_seconds))


@dataclass
class _Held:
    valid_until: float  # monotonic: send nothing after this
    renew_at: float  # monotonic: renew before the next request after this


class ConnectorLeaseKeeper:
    """Takes, renews and releases the connector leases of one worker."""

    def __init__(
        self,
        database: Database,
        owner: str,
        *,
        seconds: float,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.database = database
        self.owner = owner
        self.seconds = seconds
        self.margin = seconds / 5
        self._clock = clock
        self._monotonic = monotonic
        self._held: dict[int, _Held] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._renewals: dict[int, asyncio.Task[bool]] = {}

    def holds(self, connector_id: int) -> bool:
        """Whether this worker may send for the connector right now."""
        held = self._held.get(connector_id)
        return held is not None and self._monotonic() < held.valid_until

    async def hold(self, connector_id: int, limiter: ConnectorLimiter) -> bool:
        """Make sure this worker holds the connector's lease; False if another worker does."""
        held = self._held.get(connector_id)
        if held is not None:
            now = self._monotonic()
            if now < held.renew_at:
                return True
            if now < held.valid_until:
                self._renew_beside(connector_id, limiter)
                return True
        return await self._acquire(connector_id, limiter)

    def _renew_beside(self, connector_id: int, limiter: ConnectorLimiter) -> None:
        """Start renewing the lease in the background unless a renewal is running."""
        running = self._renewals.get(connector_id)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._renew(connector_id, limiter))
        self._renewals[connector_id] = task

    async def _renew(self, connector_id: int, limiter: ConnectorLimiter) -> bool:
        try:
            return await self._acquire(connector_id, limiter)
        except Exception:
            # The lease stays good until its local deadline; the next request past
            # renew_at tries again, and one past the deadline waits for the database.
            log.exception("renewing the lease on connector %s failed", connector_id)
            return False

    async def _acquire(self, connector_id: int, limiter: ConnectorLimiter) -> bool:
        lock = self._locks.setdefault(connector_id, asyncio.Lock())
        async with lock:
            held = self._held.get(connector_id)
            started = self._monotonic()
            if held is not None and started < held.renew_at:
                return True  # renewed while we waited for the lock
            now = self._clock()
            grant = await acquire_connector_lease(
                self.database, connector_id, self.owner, now=now, seconds=self.seconds
            )
            if grant is None:
                self._held.pop(connector_id, None)
                return False
            self._continue_bucket(grant, limiter, now)
            self._held[connector_id] = _Held(
                valid_until=started + self.seconds - self.margin,
                renew_at=started + self.seconds / 2,
            )
            return True

    def _continue_bucket(self, grant: LeaseGrant, limiter: ConnectorLimiter, now: datetime) -> None:
        """Start the bucket where the previous holder left it (unless it was this worker)."""
        if grant.taken_from == "renewed" or grant.previous_owner == self.owner:
            return
        if grant.tokens is None or grant.tokens_at is None:
            limiter.start_at(float(limiter.bucket.burst))
            return
        limiter.start_at(grant.tokens, (now - grant.tokens_at).total_seconds())

    async def release(self, connector_id: int, limiter: ConnectorLimiter) -> None:
        """Let go of the connector's lease, handing its bucket to the next holder."""
        renewal = self._renewals.pop(connector_id, None)
        if renewal is not None:
            # A renewal finishing after the release would take the lease back.
            await asyncio.gather(renewal, return_exceptions=True)
        if self._held.pop(connector_id, None) is None:
            return
        await release_connector_lease(
            self.database,
            connector_id,
            self.owner,
            tokens=limiter.tokens,
            at=self._clock(),
        )

    async def release_all(self, limiters: dict[int, ConnectorLimiter]) -> None:
        """Let go of every lease held (a stopping worker)."""
        for connector_id in list(self._held):
            limiter = limiters.get(connector_id)
            if limiter is None:
                self._held.pop(connector_id, None)
                continue
            await self.release(connector_id, limiter)
