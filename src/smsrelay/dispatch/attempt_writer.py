"""Group commit of attempt records: many sends, one transaction.

Send tasks hand their records to one `AttemptWriter`; it writes them in one transaction
per group when `max_records` are waiting or `max_delay` seconds after the first of them
arrived, whichever comes first. A failed write keeps the records and tries again: they
are the only trace of sends the provider already has.

Groups are written one at a time, in the order their records came. Each is planned
first (`plan_attempts`: on SQLite its messages' states are read and every change worked
out) and then written (`write_attempts`); the next group is planned while the one before
it is being written, so the event loop works while the database writes.

`max_records` is also where senders stop to wait for the write (`add`, `wait_for_room`):
it bounds the messages sent but not yet recorded (waiting, being planned or being written),
which a crash sends twice. A sender at the bound goes on as soon as a stored group makes
room, while the flush goes on writing what the others add. 1000 instead of 200 made
one-message dispatch ~25% faster (fewer stops behind group commits) but a worker SIGKILLed
under load left 1 117-1 236 duplicates instead of 40-264 (bench/README.md, fourth round),
so it stays at 200.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from smsrelay.store.database import Database
from smsrelay.store.messages import AttemptRecord, plan_attempts, write_attempts

log = logging.getLogger(__name__)

PlanAttempts = Callable[..., Awaitable[Any]]
WriteAttempts = Callable[[Database, Any], Awaitable[None]]


class _Writing:
    """One group being written, in a task of its own; `written` once it is stored."""

    def __init__(self, records: list[AttemptRecord], write: Callable[[], Awaitable[None]]) -> None:
        self.records = records
        self.written = False
        self.task = asyncio.ensure_future(self._run(write))

    async def _run(self, write: Callable[[], Awaitable[None]]) -> None:
        await write()
        # Set before a cancellation that came after the commit ends the task.
        self.written = True

    def error(self) -> BaseException:
        """Why a finished write did not store its group."""
        if self.task.cancelled():
            return asyncio.CancelledError()
        return self.task.exception() or RuntimeError("the write ended without storing")

    async def finish(self, *, cancel: bool) -> None:
        """Wait for the write to end; with `cancel`, cut it short (rolled back unless it has
        already committed)."""
        if cancel:
            self.task.cancel()
        try:
            await asyncio.wait([self.task])
        except asyncio.CancelledError:
            self.task.cancel()
            await asyncio.wait([self.task])
            raise


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
        plan: PlanAttempts = plan_attempts,
        write: WriteAttempts = write_attempts,
    ) -> None:
        self.database = database
        self.worker_id = worker_id
        self.max_records = max_records
        self.max_delay = max_delay
        self.retry_delay = retry_delay
        self._plan = plan
        self._write = write
        self._pending: list[AttemptRecord] = []
        self._added = asyncio.Event()
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        # Records the flush under way has taken (planning or writing): unwritten still.
        self._in_hand = 0
        # The flush started for senders at the bound (`_make_room`), and what wakes them.
        self._flushing: asyncio.Task[bool] | None = None
        self._progress: asyncio.Future[None] | None = None
        self.flushes = 0  # transactions written, for metrics and tests

    @property
    def pending(self) -> int:
        """Records waiting to be written, not yet taken by a flush."""
        return len(self._pending)

    @property
    def unwritten(self) -> int:
        """Records added and not stored yet: waiting, being planned or being written."""
        return len(self._pending) + self._in_hand

    async def add(self, records: Sequence[AttemptRecord]) -> None:
        """Queue records; at `max_records` unwritten, write and wait for room (backpressure)."""
        if not records:
            return
        self._pending.extend(records)
        self._added.set()
        if self.unwritten >= self.max_records:
            await self._make_room()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(self.max_delay))

    async def wait_for_room(self) -> None:
        """Before sending: wait while `max_records` records are still unwritten.

        Messages sent but not yet recorded are the ones a crash sends twice (at-least-once),
        so a worker whose database falls behind slows down instead of piling them up.
        """
        if self.unwritten >= self.max_records:
            await self._make_room()

    async def _make_room(self) -> None:
        """Wait until fewer than `max_records` records are unwritten, a flush writing them.

        Every sender at the bound waits for the same flush, and each goes on as soon as a
        stored group makes room for it, not when the flush has written everything (which,
        with senders adding all along, may take until they all stop). If the flush fails
        the records stay queued (retried after `retry_delay`) and the caller goes on.
        """
        while self.unwritten >= self.max_records:
            flushing = self._flushing
            if flushing is None or flushing.done():
                flushing = self._flushing = asyncio.create_task(self.flush())
            progress = self._progress
            if progress is None or progress.done():
                progress = self._progress = asyncio.get_running_loop().create_future()
            waited: list[asyncio.Future[Any]] = [flushing, progress]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if flushing.done() and (
                flushing.cancelled() or flushing.exception() is not None or not flushing.result()
            ):
                return

    def _made_room(self) -> None:
        """Wake the senders waiting in `_make_room`: a group was stored or a flush ended."""
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(None)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # No longer cancellable by `flush` from here on: a write must never be cut short.
        if self._timer is asyncio.current_task():
            self._timer = None
        await self.flush()

    async def flush(self) -> bool:
        """Write everything waiting, and what comes meanwhile; False (records kept, retry
        scheduled) if a plan or a write failed."""
        if self._timer is not None:
            # Still asleep (it clears itself on waking): this flush writes what it waits for.
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            writing: _Writing | None = None  # the group being written
            planning: list[AttemptRecord] = []  # the next one, not handed to a write yet
            try:
                while self._pending or writing is not None:
                    plan = None
                    if self._pending:
                        planning, self._pending = self._pending, []
                        self._in_hand += len(planning)
                        plan = await self._plan(self.database, planning, worker_id=self.worker_id)
                    elif writing is not None:
                        # Written, or more records to plan meanwhile: whichever comes first.
                        await self._written_or_added(writing)
                        if not writing.task.done():
                            continue
                    if writing is not None:
                        await writing.finish(cancel=False)
                        if not writing.written:
                            raise writing.error()
                        self.flushes += 1
                        self._in_hand -= len(writing.records)
                        writing = None
                        self._made_room()
                    if plan is not None:
                        write = functools.partial(self._write, self.database, plan)
                        writing, planning = _Writing(planning, write), []
            except BaseException as exc:
                failed = isinstance(exc, Exception)
                try:
                    if writing is not None:
                        # A failure lets the write under way end; a cancellation cuts it
                        # short (rolled back unless it has committed).
                        await writing.finish(cancel=not failed)
                finally:
                    if writing is not None:
                        if writing.written:
                            self.flushes += 1
                        else:
                            if writing.task.done():
                                writing.error()  # retrieved: asyncio does not report it
                            planning = writing.records + planning
                    # Put back first in line, in the order they came.
                    self._pending = planning + self._pending
                    self._in_hand = 0
                    self._made_room()
                if not failed:
                    raise
                log.error(
                    "writing %d attempt records failed; retrying in %gs",
                    len(planning),
                    self.retry_delay,
                    exc_info=exc,
                )
                self._timer = asyncio.create_task(self._flush_later(self.retry_delay))
                return False
        return True

    async def _written_or_added(self, writing: _Writing) -> None:
        self._added.clear()
        added = asyncio.ensure_future(self._added.wait())
        try:
            await asyncio.wait([writing.task, added], return_when=asyncio.FIRST_COMPLETED)
        finally:
            added.cancel()

    async def aclose(self) -> None:
        """Write what is left and stop the timer."""
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
