"""The delivery mapper: turns stored delivery-report callbacks into message statuses.

DLR intake only stores callbacks (`received`) and answers; this loop does the rest,
asynchronously and in batches:

    due_callbacks -> connector's `delivery` mapping -> parse_delivery_callback
      -> apply_delivery_reports (match, lifecycle, history; one transaction per batch)

and, at most once a second, the `unconfirmed` sweep: a `sent` message whose delivery
window has passed without a final report becomes `unconfirmed`. Parsing is pure
(`read_callback`); the store decides matching and transitions.

Any number of mappers may run (one per `serve` or `worker` process): each batch is applied
by one of them (row locks, SKIP LOCKED on PostgreSQL), and applying a report twice records
it once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from smsrelay.connectors.delivery import parse_delivery_callback
from smsrelay.connectors.errors import CallbackError
from smsrelay.settings import Settings
from smsrelay.store.connectors import StoredConnector, get_connector_by_id
from smsrelay.store.database import Database
from smsrelay.store.delivery_reports import (
    MappedCallback,
    MappingResult,
    StoredCallback,
    apply_delivery_reports,
    due_callbacks,
    fail_callbacks,
)
from smsrelay.store.messages import expire_unconfirmed
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)

# A report can beat the send response; its callback is looked at again this often, for
# this long, before it stays an orphan.
ORPHAN_RETRY = timedelta(seconds=1)
ORPHAN_WINDOW = timedelta(minutes=10)
# How often the loop looks for messages past their delivery window.
SWEEP_INTERVAL_SECONDS = 1.0


def read_callback(callback: StoredCallback, connector: StoredConnector | None) -> MappedCallback:
    """Parse one stored callback with its connector's `delivery` mapping (pure)."""
    spec = connector.definition.delivery if connector is not None else None
    if connector is None or spec is None:
        error = (
            "the connector of this callback no longer exists"
            if connector is None
            else f"connector {connector.name!r} has no `delivery` mapping, so its delivery "
            "reports cannot be read; add one (the mapping assistant proposes it); its "
            "messages stay `sent` until then"
        )
        return MappedCallback(callback.id, callback.connector_id, callback.received_at, error=error)
    try:
        reports = parse_delivery_callback(spec, callback.as_inbound())
    except CallbackError as exc:
        return MappedCallback(
            callback.id, callback.connector_id, callback.received_at, error=str(exc)
        )
    return MappedCallback(
        callback.id,
        callback.connector_id,
        callback.received_at,
        reports=tuple(reports),
        match=spec.match,
        window_hours=spec.window_hours,
    )


class DeliveryMapper:
    """Maps stored delivery reports onto messages and marks overdue messages unconfirmed."""

    def __init__(
        self,
        database: Database,
        secret_box: SecretBox,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        batch_size: int = 500,
        orphan_retry: timedelta = ORPHAN_RETRY,
        orphan_window: timedelta = ORPHAN_WINDOW,
    ) -> None:
        self.database = database
        self.secret_box = secret_box
        self.settings = settings
        self.batch_size = batch_size
        self.orphan_retry = orphan_retry
        self.orphan_window = orphan_window
        self._clock = clock
        self._wake = asyncio.Event()
        self._last_sweep = float("-inf")

    def notify(self) -> None:
        """Wake the mapper now (DLR intake calls this after storing callbacks)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Map callbacks as they arrive, until `stop` is set."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    now = self._clock()
                    await self.map_due(now)
                    if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_SECONDS:
                        self._last_sweep = time.monotonic()
                        await self.expire_overdue(now)
                except Exception:
                    log.exception("mapping delivery reports failed; trying again")
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopped, woken},
                    timeout=self.settings.poll_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            stopped.cancel()

    async def run_once(self, now: datetime | None = None) -> int:
        """Map every callback due at `now`, then sweep overdue messages; return how many.

        The count is callbacks settled or rescheduled plus messages marked unconfirmed.
        """
        at = now or self._clock()
        handled = (await self.map_due(at)).handled
        return handled + len(await self.expire_overdue(at))

    async def map_due(self, now: datetime) -> MappingResult:
        """Map callbacks due at `now`, batch after batch, until none are left."""
        total = MappingResult()
        while True:
            due = await due_callbacks(self.database, now=now, limit=self.batch_size)
            if not due:
                return total
            result = await self.map_batch(due, now)
            total.merge(result)
            if len(due) < self.batch_size or result.handled == 0:
                return total

    async def map_batch(self, due: Sequence[StoredCallback], now: datetime) -> MappingResult:
        """Parse a batch of callbacks and apply their reports in one transaction."""
        connectors: dict[int, StoredConnector | None] = {}
        for connector_id in sorted({callback.connector_id for callback in due}):
            connectors[connector_id] = await get_connector_by_id(
                self.database, self.secret_box, connector_id
            )
        mapped = []
        for index, callback in enumerate(due):
            mapped.append(read_callback(callback, connectors[callback.connector_id]))
            if index % 100 == 99:
                await asyncio.sleep(0)  # parsing is CPU work: let requests in between
        try:
            result = await self._apply(mapped, now)
        except Exception:
            # One bad callback must not hold up all the others forever: try them one by one.
            log.exception("applying %d delivery reports failed; applying them one by one", len(due))
            result = MappingResult()
            for one in mapped:
                result.merge(await self._apply_or_set_aside(one, now))
        if result.handled:
            log.debug(
                "delivery reports: %d callbacks mapped, %d orphans, %d errors, %d duplicates",
                result.mapped,
                result.orphans,
                result.errors,
                result.duplicates,
            )
        return result

    async def _apply(self, mapped: Sequence[MappedCallback], now: datetime) -> MappingResult:
        return await apply_delivery_reports(
            self.database,
            mapped,
            now=now,
            orphan_retry=self.orphan_retry,
            orphan_window=self.orphan_window,
        )

    async def _apply_or_set_aside(self, callback: MappedCallback, now: datetime) -> MappingResult:
        try:
            return await self._apply([callback], now)
        except Exception as exc:
            log.exception("delivery-report callback %d cannot be applied", callback.id)
            # If the database itself is down this raises too, and the batch is tried later.
            await fail_callbacks(
                self.database,
                [callback.id],
                f"the callback could not be applied ({type(exc).__name__}: {exc})",
                now=now,
            )
            return MappingResult(errors=1)

    async def expire_overdue(self, now: datetime) -> list[str]:
        """Mark `sent` messages past their delivery window `unconfirmed`; return their ids."""
        expired: list[str] = []
        while True:
            ids = await expire_unconfirmed(self.database, now=now, limit=self.batch_size)
            expired.extend(ids)
            if len(ids) < self.batch_size:
                return expired


__all__ = ["ORPHAN_RETRY", "ORPHAN_WINDOW", "DeliveryMapper", "read_callback"]
