"""Wake-ups across processes: PostgreSQL NOTIFY when messages are queued, LISTEN in workers.

`notify_outbox` runs inside the transaction that queues messages, so PostgreSQL delivers
the notification when (and only if) that transaction commits. `OutboxListener` keeps one
dedicated asyncpg connection LISTENing on the channel (outside the pool: a pooled
connection would be handed to other work) and calls its `wake` callback for every
notification; it reconnects after a lost connection. Workers still poll: a notification
only makes them look sooner, so one lost while reconnecting costs at most a poll interval.
SQLite has no such channel; there the API wakes its in-process dispatcher directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import Database

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "smsrelay_outbox"
# Options SQLAlchemy's asyncpg dialect understands but asyncpg.connect does not.
_POOL_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")


async def notify_outbox(conn: AsyncConnection, db: Database, connector_ids: Iterable[int]) -> None:
    """Tell listening workers that these connectors have new messages (PostgreSQL only).

    Call it in the transaction that queued them: the notification goes out at its commit.
    """
    if db.is_sqlite:
        return
    payload = ",".join(str(i) for i in sorted(set(connector_ids)))
    await conn.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": OUTBOX_CHANNEL, "payload": payload},
    )


def listener_connect_options(db: Database) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for the database `db` points at."""
    _args, options = db.engine.dialect.create_connect_args(db.engine.url)
    return {k: v for k, v in options.items() if k not in _POOL_ONLY_OPTIONS}


class OutboxListener:
    """LISTENs for queued messages on a connection of its own and calls `wake` for each."""

    def __init__(
        self,
        db: Database,
        wake: Callable[[], None],
        *,
        channel: str = OUTBOX_CHANNEL,
        retry_seconds: float = 2.0,
    ) -> None:
        self.db = db
        self.wake = wake
        self.channel = channel
        self.retry_seconds = retry_seconds
        self.listening = asyncio.Event()  # set while a LISTEN is in place (tests wait on it)

    def _on_notification(self, *_args: object) -> None:
        self.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """LISTEN until `stop` is set, reconnecting whenever the connection is lost."""
        if self.db.is_sqlite:
            return
        options = listener_connect_options(self.db)
        while not stop.is_set():
            try:
                await self._listen_once(options, stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listening for queued messages failed (%s); polling meanwhile", exc)
            self.listening.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry_seconds)

    async def _listen_once(self, options: dict[str, Any], stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(**options)
        try:
            await connection.add_listener(self.channel, self._on_notification)
            self.listening.set()
            # Messages queued while we were not listening: look once now.
            self.wake()
            while not stop.is_set() and not connection.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=_LIVENESS_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=5)


# How often a quiet listening connection is checked for having been closed under it.
_LIVENESS_SECONDS = 2.0
