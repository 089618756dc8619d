"""The dispatch side of the outbox: claims, leases, deadlines."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from outbox_samples import LEASE, claim, queue, statuses
from sqlalchemy import insert
from store_samples import NOW, acme

from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database, open_database
from smsrelay.store.lifecycle import CLAIMABLE, MessageStatus
from smsrelay.store.messages import (
    AttemptRecord,
    due_connector_ids,
    expire_unconfirmed,
    get_message,
    record_attempts,
    release_lease,
)
from smsrelay.store.outbox import STATE_COLUMNS
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import DISPATCHABLE, message_events, provider_ids

S = MessageStatus


async def test_claim_leases_due_messages_oldest_first(
    database: Database, connector: StoredConnector
) -> None:
    later = await queue(database, connector, send_at=NOW + timedelta(seconds=5))
    now_ids = await queue(database, connector, 3)
    claimed = await claim(database, connector, limit=2)
    assert [m.id for m in claimed] == now_ids[:2]
    assert all(m.previous_status is S.QUEUED and not m.accepted_before for m in claimed)
    assert claimed[0].lease_expires_at == NOW + timedelta(seconds=LEASE)
    assert claimed[0].to == "+4915100000000" and claimed[0].body == "message 0"
    assert await statuses(database, now_ids + later) == ["sending", "sending", "queued", "queued"]

    rest = await claim(database, connector, at=timedelta(seconds=10))
    assert [m.id for m in rest] == [now_ids[2], *later]
    assert await claim(database, connector, at=timedelta(seconds=10)) == []


async def test_claimed_message_carries_what_rendering_needs(
    database: Database, connector: StoredConnector
) -> None:
    await queue(
        database,
        connector,
        sender_id="ACME",
        template_id="T1",
        template_variables=("a", "b"),
        entity_id="E1",
        campaign_id="C1",
        params={"name": "Ada"},
        segments=3,
        encoding="ucs2",
    )
    (message,) = await claim(database, connector)
    outbound = message.as_outbound()
    assert outbound.message_id == message.id
    assert (outbound.sender, outbound.template_id, outbound.entity_id) == ("ACME", "T1", "E1")
    assert outbound.template_variables == ("a", "b")
    assert dict(outbound.params) == {"name": "Ada"}
    assert (message.segments, message.encoding, message.attempts) == (3, "ucs2", 0)


async def test_due_connectors_are_those_with_due_messages(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    other = await save_connector(database, box, acme("other"))
    await queue(database, other, send_at=NOW + timedelta(minutes=1))
    assert await due_connector_ids(database, NOW) == []
    await queue(database, connector)
    assert await due_connector_ids(database, NOW) == [connector.id]
    assert await due_connector_ids(database, NOW + timedelta(minutes=1)) == [connector.id, other.id]
    await claim(database, connector)
    assert await due_connector_ids(database, NOW) == []
    # The lease expires: the message is due again.
    assert await due_connector_ids(database, NOW + timedelta(seconds=LEASE)) == [connector.id]


async def test_concurrent_claimers_never_share_a_message(
    database: Database, database_url: str, connector: StoredConnector
) -> None:
    ids = await queue(database, connector, 300)
    others = [open_database(database_url) for _ in range(3)]
    claimers = [database, *others]

    async def drain(db: Database, worker: str) -> list[str]:
        taken: list[str] = []
        while batch := await claim(db, connector, worker=worker, limit=25):
            taken += [m.id for m in batch]
        return taken

    try:
        results = await asyncio.gather(*(drain(db, f"w{n}") for n, db in enumerate(claimers)))
    finally:
        for db in others:
            await db.close()
    everything = [i for taken in results for i in taken]
    assert sorted(everything) == sorted(ids)
    assert len(set(everything)) == len(everything)


async def test_expired_lease_is_reclaimed_and_flags_an_accepted_message(
    database: Database, connector: StoredConnector
) -> None:
    plain, accepted, reported = await queue(database, connector, 3)
    await claim(database, connector, worker="crashed")
    async with database.transaction() as conn:
        # What a crash after the provider answered (or after its report came) leaves.
        await conn.execute(
            insert(provider_ids).values(
                connector_id=connector.id, provider_id="p-1", message_id=accepted
            )
        )
        await conn.execute(
            insert(message_events).values(
                message_id=reported, at=NOW, kind="report", status="delivered", detail={}
            )
        )
    assert await claim(database, connector, worker="w2", at=timedelta(seconds=LEASE - 1)) == []
    again = await claim(database, connector, worker="w2", at=timedelta(seconds=LEASE))
    flags = {m.id: (m.previous_status, m.accepted_before) for m in again}
    assert flags == {
        plain: (S.SENDING, False),
        accepted: (S.SENDING, True),
        reported: (S.SENDING, True),
    }


async def test_retried_message_is_claimed_again_when_due_with_its_attempts(
    database: Database, connector: StoredConnector
) -> None:
    (message_id,) = await queue(database, connector)
    await claim(database, connector)
    retry_at = NOW + timedelta(seconds=8)
    await record_attempts(
        database,
        [AttemptRecord(message_id, "retry", error="timeout", next_attempt_at=retry_at, at=NOW)],
        worker_id="w1",
    )
    assert await claim(database, connector, at=timedelta(seconds=7)) == []
    (again,) = await claim(database, connector, at=timedelta(seconds=8))
    assert (again.attempts, again.previous_status, again.accepted_before) == (1, S.QUEUED, False)


async def test_release_lease_puts_unsent_messages_back_at_once(
    database: Database, connector: StoredConnector
) -> None:
    ids = await queue(database, connector, 3)
    await claim(database, connector, worker="stopping", limit=2)
    await claim(database, connector, worker="other", limit=1)
    released = await release_lease(database, "stopping", now=NOW + timedelta(seconds=1))
    assert released == 2
    assert await statuses(database, ids) == ["queued", "queued", "sending"]
    again = await claim(database, connector, worker="next", at=timedelta(seconds=1))
    assert sorted(m.id for m in again) == sorted(ids[:2])


async def test_sent_messages_without_a_final_report_become_unconfirmed(
    database: Database, connector: StoredConnector
) -> None:
    early, late, silent = await queue(database, connector, 3)
    await claim(database, connector)
    await record_attempts(
        database,
        [
            AttemptRecord(early, "sent", next_attempt_at=NOW + timedelta(hours=1), at=NOW),
            AttemptRecord(late, "sent", next_attempt_at=NOW + timedelta(hours=3), at=NOW),
            AttemptRecord(silent, "sent", next_attempt_at=None, at=NOW),
        ],
        worker_id="w1",
    )
    expired = await expire_unconfirmed(database, now=NOW + timedelta(hours=2))
    assert expired == [early]
    assert await statuses(database, [early, late, silent]) == ["unconfirmed", "sent", "sent"]
    stored = await get_message(database, early)
    assert stored is not None
    assert stored.final_at == NOW + timedelta(hours=2)
    assert stored.events[-1].status == "unconfirmed"
    assert await expire_unconfirmed(database, now=NOW + timedelta(hours=2)) == []


def test_the_outbox_index_holds_exactly_the_claimable_statuses() -> None:
    listed = set(re.findall(r"'(\w+)'", str(DISPATCHABLE)))
    assert listed == {status.value for status in CLAIMABLE}


async def test_a_claim_knows_the_rows_as_it_left_them(
    database: Database, connector: StoredConnector
) -> None:
    """SQLite in a file: each claimed message carries its row as the claim wrote it, which
    a group commit checks instead of reading (`store.attempt_results`)."""
    ids = await queue(database, connector, 3)
    claimed = await claim(database, connector)
    assert sorted(m.id for m in claimed) == sorted(ids)
    if not database.writes_at_once:
        assert all(m.as_claimed is None for m in claimed)
        return
    # In the driver's form (timestamps as SQLite's text), as a group commit compares them.
    columns = ", ".join(column.name for column in STATE_COLUMNS)
    async with database.connect() as conn:
        rows = await conn.exec_driver_sql(f"SELECT {columns}, rowid FROM messages")
        stored = {row[0]: tuple(row) for row in rows}
    assert {m.id: m.as_claimed for m in claimed} == stored
