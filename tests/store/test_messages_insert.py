"""Queueing batches: every mix of fields and every batch size stores each row as given."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from store_samples import NOW

from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.messages import (
    MESSAGE_ID_PATTERN,
    NewMessage,
    get_message,
    insert_messages,
    message_row,
    new_message_id,
    new_message_ids,
)
from smsrelay.store.tables import messages

LATER = NOW + timedelta(days=1)


def plain(connector: StoredConnector, n: int) -> NewMessage:
    return NewMessage(
        id=new_message_id(),
        connector_id=connector.id,
        to=f"+49151{n:08d}",
        created_at=NOW,
        body=f"code {n}",
        sender_name="main",
        sender_id="ACME",
    )


def with_everything(connector: StoredConnector, n: int) -> NewMessage:
    return plain(connector, n)._replace(
        template_id="T-1",
        template_variables=("a", str(n)),
        entity_id="E-1",
        campaign_id="spring",
        params={"n": str(n)},
        webhook_id="wh1",
        send_at=LATER,
        segments=3,
        encoding="ucs2",
    )


async def stored_rows(database: Database) -> dict[str, dict[str, Any]]:
    async with database.connect() as conn:
        rows = (await conn.execute(select(messages))).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def expected_row(message: NewMessage) -> dict[str, Any]:
    """What the plain SQLAlchemy insert of `message_row` would store."""
    return {
        **message_row(message),
        "lease_owner": None,
        "lease_expires_at": None,
        "held_since": None,
        "failure_reason": None,
        "sent_at": None,
        "final_at": None,
    }


@pytest.mark.parametrize("size", [1, 3, 255, 256, 257, 1000, 1001, 2300])
async def test_a_batch_of_any_size_stores_every_row_as_given(
    database: Database, connector: StoredConnector, size: int
) -> None:
    # Every seventh message carries every optional field: chunks of both kinds.
    batch = [
        with_everything(connector, n) if n % 7 == 3 else plain(connector, n) for n in range(size)
    ]
    assert await insert_messages(database, batch) is None
    rows = await stored_rows(database)
    assert rows == {m.id: expected_row(m) for m in batch}


async def test_optional_fields_read_back_through_get_message(
    database: Database, connector: StoredConnector
) -> None:
    batch = [plain(connector, 1), with_everything(connector, 2), plain(connector, 3)]
    await insert_messages(database, batch)
    full = await get_message(database, batch[1].id)
    assert full is not None
    assert (full.template_variables, dict(full.params)) == (("a", "2"), {"n": "2"})
    assert full.send_at == full.next_attempt_at == LATER
    bare = await get_message(database, batch[0].id)
    assert bare is not None
    assert (bare.template_variables, dict(bare.params), bare.send_at) == ((), {}, None)
    assert bare.next_attempt_at == bare.created_at == bare.updated_at == NOW
    assert bare.status.value == "queued" and bare.attempts == 0


async def test_an_empty_batch_stores_nothing(database: Database) -> None:
    assert await insert_messages(database, []) is None
    assert await stored_rows(database) == {}


def test_ids_made_together_are_unique_ordered_and_continue_one_by_one() -> None:
    before = new_message_id()
    together = new_message_ids(5000)
    after = new_message_id()
    ids = [before, *together, after]
    assert all(MESSAGE_ID_PATTERN.match(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert new_message_ids(0) == []


def test_ids_made_together_count_up_across_runs_of_1024() -> None:
    ids = new_message_ids(3000)
    for a, b in itertools.pairwise(ids):
        assert a < b
        if a[:10] == b[:10]:  # the same millisecond: the random part goes up by one
            assert crockford(b[10:]) == crockford(a[10:]) + 1


def crockford(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value
