"""The housekeeping loop: prune expired idempotency keys and the old webhook delivery log.

Runs in every process that runs background work (`smsrelay serve` embedded, `smsrelay
worker`), once at start and then every `housekeeping_interval_seconds`. Idempotency keys
are remembered for at least `idempotency_key_hours`, finished webhook deliveries (and their
attempts, the dashboard's delivery log) for `webhook_log_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from smsrelay.settings import Settings
from smsrelay.store.database import Database
from smsrelay.store.housekeeping import Pruned, prune_expired
from smsrelay.store.timestamps import utc_now

log = logging.getLogger(__name__)


class Housekeeper:
    """Prunes what smsrelay keeps only for a while."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.database = database
        self.settings = settings
        self._clock = clock

    async def run_once(self) -> Pruned:
        """One pass: everything older than its retention, measured from now."""
        now = self._clock()
        pruned = await prune_expired(
            self.database,
            idempotency_before=now - timedelta(hours=self.settings.idempotency_key_hours),
            webhook_log_before=now - timedelta(days=self.settings.webhook_log_days),
        )
        if pruned.total:
            log.info(
                "housekeeping removed %d idempotency keys, %d webhook deliveries, %d attempts",
                pruned.idempotency_keys,
                pruned.webhook_deliveries,
                pruned.webhook_attempts,
            )
        return pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now and every interval until `stop` is set; a failed pass is retried."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("housekeeping failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=self.settings.housekeeping_interval_seconds
                )
