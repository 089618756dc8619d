"""Group commit of attempt records: many sends, one transaction.

Send tasks hand their records to one `AttemptWriter`; it writes them with a single
`record_attempts` call (one transaction) when `max_records` are waiting or `max_delay`
seconds after the first of them arrived, whichever comes first. A failed write keeps the
records and tries again: they are the only trace of sends the provider already has.

`max_records` is also where senders stop to wait for the write (`add`, `wait_for_room`):
it bounds the messages sent but not yet recorded, which a crash sends twice. 1000 instead
of 200 made one-message dispatch ~25% faster (fewer stops behind group commits) but a
worker SIGKILLed under load left 1 117-1 236 duplicates instead of 40-264
(bench/README.md, fourth round), so it stays at 200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from smsrelay.store.database import Database
from smsrelay.store.messages import AttemptRecord, record_attempts

log = logging.getLogger(__name__)

RecordAttempts = Callable[..., Awaitable[None]]


class AttemptWriter:
    """Buffers `AttemptRecord`s and writes them in groups."""

    def __init__(
        self,
        database: Database,
        worker_id: str,
        *,
        max_records: int = 200,
        max_delay: float = 0.05,
        retry_delay: float = 1.0,
        write: RecordAttempts = record_attempts,
    ) -> None:
        self.database = database
        self.worker_id = worker_id
        self.max_records = max_records
        self.max_delay = max_delay
        self.retry_delay = retry_delay
        self._write = write
        self._pending: list[AttemptRecord] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self.flushes = 0  # transactions written, for metrics and tests

    @property
    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._pending)

    async def add(self, records: Sequence[AttemptRecord]) -> None:
        """Queue records; write now if the group is full (the caller waits: backpressure)."""
        if not records:
            return
        self._pending.extend(records)
        if len(self._pending) >= self.max_records:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(self.max_delay))

    async def wait_for_room(self) -> None:
        """Before sending: wait while a full group of records is still unwritten.

        Messages sent but not yet recorded are the ones a crash sends twice (at-least-once),
        so a worker whose database falls behind slows down instead of piling them up.
        """
        if len(self._pending) >= self.max_records:
            await self.flush()

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # No longer cancellable by `flush` from here on: a write must never be cut short.
        if self._timer is asyncio.current_task():
            self._timer = None
        await self.flush()

    async def flush(self) -> bool:
        """Write everything waiting; False (records kept, retry scheduled) if the write failed."""
        if self._timer is not None:
            # Still asleep (it clears itself on waking): this flush writes what it waits for.
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    await self._write(self.database, group, worker_id=self.worker_id)
                except asyncio.CancelledError:
                    self._pending = group + self._pending  # rolled back: still to be written
                    raise
                except Exception:
                    log.exception("writing %d attempt records failed; retrying", len(group))
                    self._pending = group + self._pending
                    self._timer = asyncio.create_task(self._flush_later(self.retry_delay))
                    return False
                self.flushes += 1
        return True

    async def aclose(self) -> None:
        """Write what is left and stop the timer."""
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
