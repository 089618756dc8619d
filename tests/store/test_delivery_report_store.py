"""Stored delivery-report callbacks: group-committed intake, reading them back, phone matching.

(Named apart from tests/connectors/test_delivery_reports.py: test modules share one
namespace.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
from store_samples import NOW

from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.delivery_reports import (
    CallbackNotStored,
    CallbackState,
    CallbackWriter,
    NewCallback,
    count_callbacks,
    due_callbacks,
    get_callback,
    insert_callbacks,
    list_callbacks,
    same_number,
)


def callback(connector: StoredConnector, n: int, **changes: object) -> NewCallback:
    values: dict[str, object] = {
        "connector_id": connector.id,
        "received_at": NOW + timedelta(milliseconds=n),
        "method": "POST",
        "url": f"https://relay.example.com/dlr/{connector.dlr_token}?n={n}&tag=a&tag=b",
        "headers": {"content-type": "application/json", "authorization": "***"},
        "body": f'{{"id": "P-{n}", "status": "delivered"}}'.encode(),
        "content_type": "application/json",
    }
    values.update(changes)
    return NewCallback(**values)  # type: ignore[arg-type]


async def test_concurrent_callbacks_share_few_transactions(
    database: Database, connector: StoredConnector
) -> None:
    writer = CallbackWriter(database)

    await asyncio.gather(*(writer.store(callback(connector, n)) for n in range(300)))

    assert await count_callbacks(database, connector_id=connector.id) == 300
    assert writer.stored == 300
    # Every store() joined a group before the first group was written.
    assert writer.flushes <= 2


async def test_a_full_group_is_written_without_waiting_for_the_delay(
    database: Database, connector: StoredConnector
) -> None:
    writer = CallbackWriter(database, max_rows=10, max_delay=3600)

    await asyncio.gather(*(writer.store(callback(connector, n)) for n in range(30)))

    assert await count_callbacks(database) == 30
    assert writer.flushes == 3


async def test_a_failed_transaction_fails_every_callback_in_it(
    database: Database, connector: StoredConnector
) -> None:
    async def broken(db: Database, rows: Sequence[NewCallback]) -> None:
        raise OSError("disk full")

    writer = CallbackWriter(database, write=broken)

    results = await asyncio.gather(
        *(writer.store(callback(connector, n)) for n in range(5)), return_exceptions=True
    )

    assert all(isinstance(r, CallbackNotStored) for r in results)
    assert "disk full" in str(results[0])
    assert await count_callbacks(database) == 0


async def test_stored_callbacks_read_back_newest_first_and_due_for_mapping(
    database: Database, connector: StoredConnector
) -> None:
    await insert_callbacks(database, [callback(connector, n) for n in range(3)])

    stored = await list_callbacks(database, connector.id, limit=2)

    assert [s.url.split("?n=")[1][0] for s in stored] == ["2", "1"]
    newest = stored[0]
    assert newest.state is CallbackState.RECEIVED
    assert newest.body == b'{"id": "P-2", "status": "delivered"}'
    assert newest.headers == {"content-type": "application/json", "authorization": "***"}
    assert newest.next_check_at == newest.received_at
    inbound = newest.as_inbound()
    assert inbound.query == (("n", "2"), ("tag", "a"), ("tag", "b"))
    assert inbound.header("Content-Type") == "application/json"
    assert await get_callback(database, newest.id) == newest
    assert await get_callback(database, newest.id + 100) is None
    due = await due_callbacks(database, now=NOW + timedelta(milliseconds=1), limit=10)
    assert len(due) == 2
    assert await list_callbacks(database, connector.id, state=CallbackState.ORPHAN) == []


@pytest.mark.parametrize(
    ("stored", "reported", "same"),
    [
        ("+447911123456", "447911123456", True),
        ("+447911123456", "+44 7911 123456", True),
        ("+447911123456", "07911123456", True),  # national form
        ("+919812345678", "9812345678", True),
        ("+447911123456", "447911123457", False),
        ("+447911123456", "123456", False),  # too short to mean the same phone
        ("+254711XXXYYY", "+254711XXXYYY", True),
    ],
)
def test_a_reported_recipient_is_compared_by_its_digits(
    stored: str, reported: str, same: bool
) -> None:
    assert same_number(stored, reported) is same
