"""Group commit of delivery-report callbacks: what a group's transaction keeps, and shutdown.

A group is one statement on each database (a multi-row INSERT on SQLite, an INSERT from
arrays on PostgreSQL); these tests pin that nothing is lost or changed on the way.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from store_samples import NOW

from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.delivery_reports import (
    CallbackState,
    CallbackWriter,
    NewCallback,
    count_callbacks,
    insert_callbacks,
    list_callbacks,
)


def raw_callback(connector: StoredConnector, n: int, **changes: object) -> NewCallback:
    values: dict[str, object] = {
        "connector_id": connector.id,
        "received_at": NOW + timedelta(microseconds=n),
        "method": "GET",
        "url": f"https://relay.example.com/dlr/{connector.dlr_token}?n={n}",
        "headers": {"x-n": str(n)},
        "body": b"",
        "content_type": None,
    }
    values.update(changes)
    return NewCallback(**values)  # type: ignore[arg-type]


async def test_callbacks_waiting_at_shutdown_are_committed_by_aclose(
    database: Database, connector: StoredConnector
) -> None:
    writer = CallbackWriter(database, max_rows=1000, max_delay=3600)
    waiting = [asyncio.create_task(writer.store(raw_callback(connector, n))) for n in range(5)]
    await asyncio.sleep(0.05)
    assert await count_callbacks(database) == 0

    await writer.aclose()

    assert all(task.done() and task.exception() is None for task in waiting)
    assert await count_callbacks(database) == 5


async def test_a_group_keeps_bodies_headers_and_times_exactly(
    database: Database, connector: StoredConnector
) -> None:
    body = bytes(range(256)) + "ü€".encode()
    await insert_callbacks(
        database,
        [
            raw_callback(connector, 0),
            raw_callback(
                connector,
                1,
                method="POST",
                body=body,
                headers={"content-type": "text/plain; charset=latin-1", "x-quote": '"a",\\b'},
                content_type="text/plain; charset=latin-1",
            ),
        ],
    )

    newest, oldest = await list_callbacks(database, connector.id)

    assert (oldest.method, oldest.body, oldest.content_type) == ("GET", b"", None)
    assert newest.body == body
    assert newest.headers == {"content-type": "text/plain; charset=latin-1", "x-quote": '"a",\\b'}
    assert newest.received_at == NOW + timedelta(microseconds=1)
    assert newest.next_check_at == newest.received_at
    assert newest.state is CallbackState.RECEIVED
    assert newest.report_count == 0


async def test_more_callbacks_than_one_statement_takes_are_all_stored(
    database: Database, connector: StoredConnector
) -> None:
    await insert_callbacks(database, [raw_callback(connector, n) for n in range(1_201)])

    assert await count_callbacks(database, connector_id=connector.id) == 1_201
    newest = (await list_callbacks(database, connector.id, limit=1))[0]
    assert newest.url.endswith("?n=1200")
