"""Message intake and reading: ids, batch insert, idempotency, history, paging, canceling."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from store_samples import NOW

from smsrelay.store.api_keys import create_api_key
from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.errors import IdempotencyConflict
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import (
    MESSAGE_ID_PATTERN,
    IdempotencyRecord,
    IdempotentReplay,
    InvalidCursor,
    NewMessage,
    cancel_message,
    get_message,
    insert_messages,
    list_messages,
    new_message_id,
)
from smsrelay.store.tables import messages


def make_message(connector: StoredConnector, **fields: Any) -> NewMessage:
    values: dict[str, Any] = {
        "id": new_message_id(),
        "connector_id": connector.id,
        "to": "+4915112345678",
        "body": "Your code is 1234",
        "created_at": NOW,
    }
    values.update(fields)
    return NewMessage(**values)


async def count_messages(database: Database) -> int:
    async with database.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(messages))).scalar_one())


def test_message_ids_are_26_characters_unique_and_time_ordered() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert all(MESSAGE_ID_PATTERN.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


async def test_inserted_message_reads_back_queued_with_every_field(
    database: Database, connector: StoredConnector
) -> None:
    later = NOW + timedelta(hours=2)
    message = make_message(
        connector,
        sender_name="main",
        sender_id="ACME",
        template_id="T-1",
        template_variables=("1234", "5 minutes"),
        entity_id="E-9",
        campaign_id="spring",
        params={"name": "Ada", "emoji": "🎉"},
        webhook_id="wh1",
        send_at=later,
        segments=2,
        encoding="ucs2",
    )
    assert await insert_messages(database, [message]) is None
    stored = await get_message(database, message.id)
    assert stored is not None
    assert stored.status is MessageStatus.QUEUED
    assert stored.connector_name == "acme"
    assert (stored.to, stored.body, stored.sender_name, stored.sender_id) == (
        "+4915112345678",
        "Your code is 1234",
        "main",
        "ACME",
    )
    assert stored.template_variables == ("1234", "5 minutes")
    assert stored.params == {"name": "Ada", "emoji": "🎉"}
    assert (stored.template_id, stored.entity_id, stored.campaign_id) == ("T-1", "E-9", "spring")
    assert (stored.segments, stored.encoding, stored.webhook_id) == (2, "ucs2", "wh1")
    assert stored.send_at == later
    assert stored.next_attempt_at == later
    assert (stored.created_at, stored.updated_at) == (NOW, NOW)
    assert stored.attempts == 0
    assert stored.events == ()
    assert stored.provider_ids == ()


async def test_unknown_message_is_none(database: Database) -> None:
    assert await get_message(database, new_message_id()) is None


async def test_a_large_batch_is_inserted_at_once(
    database: Database, connector: StoredConnector
) -> None:
    batch = [make_message(connector, to=f"+49151{i:08d}") for i in range(2500)]
    await insert_messages(database, batch)
    assert await count_messages(database) == 2500
    page, _ = await list_messages(database, limit=1)
    assert page[0].id == batch[-1].id


async def test_a_failing_batch_inserts_nothing(
    database: Database, connector: StoredConnector
) -> None:
    first = make_message(connector)
    batch = [make_message(connector) for _ in range(5)] + [first]
    await insert_messages(database, [first])
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await insert_messages(database, batch)
    assert await count_messages(database) == 1


async def test_idempotent_insert_replays_the_first_answer(
    database: Database, connector: StoredConnector
) -> None:
    key, _ = await create_api_key(database, "app")
    first = make_message(connector)
    answer = {"id": first.id, "status": "queued"}
    record = IdempotencyRecord(key.id, "order-42", "hash-a", 202, answer)
    assert await insert_messages(database, [first], idempotency=record) is None

    retry = make_message(connector)
    replay = await insert_messages(
        database,
        [retry],
        idempotency=IdempotencyRecord(key.id, "order-42", "hash-a", 202, {"id": retry.id}),
    )
    assert replay == IdempotentReplay(status_code=202, response=answer)
    assert await count_messages(database) == 1
    assert await get_message(database, retry.id) is None


async def test_idempotency_key_reused_for_another_request_is_a_conflict(
    database: Database, connector: StoredConnector
) -> None:
    key, _ = await create_api_key(database, "app")
    await insert_messages(
        database,
        [make_message(connector)],
        idempotency=IdempotencyRecord(key.id, "k", "hash-a", 202, {}),
    )
    with pytest.raises(IdempotencyConflict):
        await insert_messages(
            database,
            [make_message(connector)],
            idempotency=IdempotencyRecord(key.id, "k", "hash-b", 202, {}),
        )
    assert await count_messages(database) == 1


async def test_idempotency_keys_belong_to_one_api_key(
    database: Database, connector: StoredConnector
) -> None:
    one, _ = await create_api_key(database, "one")
    two, _ = await create_api_key(database, "two")
    for key in (one, two):
        record = IdempotencyRecord(key.id, "same", "hash", 202, {})
        assert (
            await insert_messages(database, [make_message(connector)], idempotency=record) is None
        )
    assert await count_messages(database) == 2


async def test_concurrent_requests_with_one_key_queue_once(
    database: Database, database_url: str, connector: StoredConnector
) -> None:
    from smsrelay.store.database import open_database

    key, _ = await create_api_key(database, "app")
    other = open_database(database_url)
    try:
        results = await asyncio.gather(
            *(
                insert_messages(
                    db,
                    [make_message(connector)],
                    idempotency=IdempotencyRecord(key.id, "k", "h", 202, {"n": n}),
                )
                for n, db in enumerate([database, other, database, other])
            )
        )
    finally:
        await other.close()
    assert sum(result is None for result in results) == 1
    replays = [r for r in results if r is not None]
    assert len({r.response["n"] for r in replays}) == 1
    assert await count_messages(database) == 1


async def test_list_pages_newest_first_by_cursor(
    database: Database, connector: StoredConnector
) -> None:
    batch = [make_message(connector) for _ in range(7)]
    await insert_messages(database, batch)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await list_messages(database, cursor=cursor, limit=3)
        seen += [m.id for m in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == [m.id for m in reversed(batch)]


async def test_list_filters_combine(database: Database, connector: StoredConnector) -> None:
    a = make_message(connector, to="+111", campaign_id="c1", sender_name="main")
    b = make_message(connector, to="+222", campaign_id="c1", created_at=NOW + timedelta(hours=1))
    c = make_message(connector, to="+111", created_at=NOW + timedelta(hours=2))
    await insert_messages(database, [a, b, c])
    await cancel_message(database, c.id, NOW)

    async def ids(**filters: Any) -> list[str]:
        page, _ = await list_messages(database, **filters)
        return [m.id for m in page]

    assert await ids(to="+111") == [c.id, a.id]
    assert await ids(campaign_id="c1") == [b.id, a.id]
    assert await ids(campaign_id="c1", to="+111") == [a.id]
    assert await ids(sender="main") == [a.id]
    assert await ids(status="canceled") == [c.id]
    assert await ids(status=["queued", "canceled"]) == [c.id, b.id, a.id]
    assert await ids(connector="acme") == [c.id, b.id, a.id]
    assert await ids(connector="other") == []
    assert await ids(created_after=NOW + timedelta(hours=1)) == [c.id, b.id]
    assert await ids(created_before=NOW + timedelta(hours=1)) == [a.id]


async def test_list_refuses_a_bad_cursor_and_limit(database: Database) -> None:
    with pytest.raises(InvalidCursor):
        await list_messages(database, cursor="not-an-id")
    with pytest.raises(ValueError):
        await list_messages(database, limit=0)


async def test_cancel_a_queued_message_records_the_change(
    database: Database, connector: StoredConnector
) -> None:
    message = make_message(connector, send_at=NOW + timedelta(days=1))
    await insert_messages(database, [message])
    later = NOW + timedelta(minutes=1)
    result = await cancel_message(database, message.id, later)
    assert (result.canceled, result.status) == (True, MessageStatus.CANCELED)
    stored = await get_message(database, message.id)
    assert stored is not None
    assert stored.status is MessageStatus.CANCELED
    assert stored.final_at == later
    assert [(e.kind, e.status, e.at) for e in stored.events] == [("status", "canceled", later)]

    again = await cancel_message(database, message.id, later)
    assert (again.canceled, again.status) == (False, MessageStatus.CANCELED)
    assert again.reason is not None and "canceled" in again.reason


async def test_cancel_an_unknown_message_says_so(database: Database) -> None:
    result = await cancel_message(database, new_message_id(), NOW)
    assert (result.canceled, result.status, result.reason) == (False, None, "not_found")
