"""The dispatch side of the outbox: claims, leases, group-committed attempt results."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update
from store_samples import NOW, acme

from smsrelay.store import outbox
from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database, open_database
from smsrelay.store.lifecycle import CLAIMABLE, MessageStatus
from smsrelay.store.messages import (
    AttemptRecord,
    ClaimedMessage,
    NewMessage,
    claim_due_messages,
    due_connector_ids,
    expire_unconfirmed,
    get_message,
    insert_messages,
    new_message_id,
    record_attempts,
    release_lease,
)
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.tables import DISPATCHABLE, message_events, messages, provider_ids

S = MessageStatus
LEASE = 30.0


async def queue(
    database: Database, connector: StoredConnector, count: int = 1, **fields: Any
) -> list[str]:
    batch = [
        NewMessage(
            id=new_message_id(),
            connector_id=connector.id,
            to=f"+49151{i:08d}",
            body=f"message {i}",
            created_at=NOW,
            **fields,
        )
        for i in range(count)
    ]
    await insert_messages(database, batch)
    return [m.id for m in batch]


async def claim(
    database: Database,
    connector: StoredConnector,
    *,
    worker: str = "w1",
    limit: int = 100,
    at: timedelta = timedelta(0),
) -> list[ClaimedMessage]:
    return await claim_due_messages(
        database,
        connector_id=connector.id,
        worker_id=worker,
        limit=limit,
        lease_seconds=LEASE,
        now=NOW + at,
    )


async def statuses(database: Database, ids: Sequence[str]) -> list[str]:
    async with database.connect() as conn:
        rows = await conn.execute(select(messages.c.id, messages.c.status))
        found = {row.id: row.status for row in rows}
    return [found[i] for i in ids]


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


async def test_attempt_results_are_recorded_in_one_transaction(
    database: Database, connector: StoredConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, retried, failed = await queue(database, connector, 3)
    await claim(database, connector)
    at = NOW + timedelta(seconds=1)
    deadline = at + timedelta(hours=72)
    retry_at = at + timedelta(seconds=4)
    transactions: list[object] = []

    def count_transaction(connection: object) -> None:
        transactions.append(connection)

    # Committed ones: on SQLite the states are read first, on a read-only connection, and
    # written on the writer thread's connection (`Database.write_at_once`).
    event.listen(database.engine.sync_engine, "commit", count_transaction)
    write_at_once = database.write_at_once

    async def counted(work: Any) -> Any:
        transactions.append(work)
        return await write_at_once(work)

    monkeypatch.setattr(database, "write_at_once", counted)
    try:
        await record_attempts(
            database,
            [
                AttemptRecord(
                    sent,
                    "sent",
                    provider_ids=("p-1", "p-2"),
                    recipient="+4915100000000",
                    next_attempt_at=deadline,
                    detail={"status": 200},
                    at=at,
                ),
                AttemptRecord(retried, "retry", error="HTTP 503", next_attempt_at=retry_at, at=at),
                AttemptRecord(failed, "failed", error="invalid number", at=at),
            ],
            worker_id="w1",
        )
    finally:
        event.remove(database.engine.sync_engine, "commit", count_transaction)
    assert len(transactions) == 1

    s = await get_message(database, sent)
    assert s is not None
    assert (s.status, s.attempts, s.sent_at, s.next_attempt_at) == (S.SENT, 1, at, deadline)
    assert s.provider_ids == ("p-1", "p-2")
    assert [(e.kind, e.status) for e in s.events] == [("attempt", "sent"), ("status", "sent")]
    assert s.events[0].detail == {
        "attempt": 1,
        "outcome": "sent",
        "provider_ids": ["p-1", "p-2"],
        "status": 200,
    }

    r = await get_message(database, retried)
    assert r is not None
    assert (r.status, r.attempts, r.failure_reason, r.next_attempt_at) == (
        S.QUEUED,
        1,
        "HTTP 503",
        retry_at,
    )
    assert r.events[-1].detail == {"from": "sending", "reason": "HTTP 503"}

    f = await get_message(database, failed)
    assert f is not None
    assert (f.status, f.failure_reason, f.final_at, f.next_attempt_at) == (
        S.FAILED,
        "invalid number",
        at,
        None,
    )

    async with database.connect() as conn:
        leases = (await conn.execute(select(messages.c.lease_owner))).scalars().all()
        recipients = (await conn.execute(select(provider_ids.c.recipient))).scalars().all()
    assert leases == [None, None, None]
    assert recipients == ["+4915100000000", "+4915100000000"]


async def test_a_batch_history_reads_as_if_each_message_stored_its_own_trace(
    database: Database, connector: StoredConnector
) -> None:
    ids = await queue(database, connector, 8)
    await claim(database, connector)
    at = NOW + timedelta(seconds=1)
    deadline = at + timedelta(hours=72)
    trace = {"request": {"method": "POST", "body": "[...]"}, "batch_size": 6}
    alone = {"request": {"method": "POST", "body": "{...}"}, "batch_size": 1}
    batch, single = ids[:6], ids[6]
    records = [
        AttemptRecord(
            m, "sent", provider_ids=(f"p-{m}",), next_attempt_at=deadline, detail=trace, at=at
        )
        for m in batch[:5]
    ]
    records.append(AttemptRecord(batch[5], "retry", error="HTTP 503", detail=trace, at=at))
    records.append(
        AttemptRecord(
            single, "sent", provider_ids=("p-x",), next_attempt_at=deadline, detail=alone, at=at
        )
    )
    await record_attempts(database, records, worker_id="w1")

    for m in batch[:5]:
        message = await get_message(database, m)
        assert message is not None
        assert (message.status, message.attempts, message.sent_at) == (S.SENT, 1, at)
        assert message.provider_ids == (f"p-{m}",)
        assert [(e.kind, e.status, e.at) for e in message.events] == [
            ("attempt", "sent", at),
            ("status", "sent", at),
        ]
        assert message.events[0].detail == {
            "attempt": 1,
            "outcome": "sent",
            "provider_ids": [f"p-{m}"],
            **trace,
        }
        assert message.events[1].detail == {"from": "sending"}
    retried = await get_message(database, batch[5])
    assert retried is not None
    assert [e.detail for e in retried.events] == [
        {"attempt": 1, "outcome": "retry", "error": "HTTP 503", **trace},
        {"from": "sending", "reason": "HTTP 503"},
    ]
    alone_message = await get_message(database, single)
    assert alone_message is not None
    assert [e.detail for e in alone_message.events] == [
        {"attempt": 1, "outcome": "sent", "provider_ids": ["p-x"], **alone},
        {"from": "sending"},
    ]
    # The status feed (webhooks) sees the same status rows as ever, one per change.
    async with database.connect() as conn:
        rows = (
            await conn.execute(
                select(message_events.c.message_id, message_events.c.detail).where(
                    message_events.c.kind == "status"
                )
            )
        ).all()
    assert sorted(r.message_id for r in rows) == sorted(ids[:7])
    assert all(
        r.detail in ({"from": "sending"}, {"from": "sending", "reason": "HTTP 503"}) for r in rows
    )


async def test_one_request_with_messages_in_different_states_keeps_each_ones_history(
    database: Database, connector: StoredConnector
) -> None:
    # The group commit works a request's effect out once per state: messages of one
    # request in other states (another worker's lease, recorded twice) still get their own.
    ids = await queue(database, connector, 6)
    await claim(database, connector, limit=4)
    await claim(database, connector, worker="w2", limit=2)
    at = NOW + timedelta(seconds=1)
    trace = {"batch_size": 6}
    records = [
        AttemptRecord(ids[0], "sent", provider_ids=("p-0",), detail=trace, at=at),
        AttemptRecord(ids[1], "sent", provider_ids=("p-1",), detail=trace, at=at),
        AttemptRecord(ids[2], "sent", detail=trace, at=at),
        AttemptRecord(ids[3], "sent", provider_ids=("p-3",), detail=trace, at=at),
        AttemptRecord(ids[3], "sent", provider_ids=("p-3b",), detail=trace, at=at),
        AttemptRecord(ids[4], "retry", error="HTTP 503", detail=trace, at=at),
    ]
    await record_attempts(database, records, worker_id="w1")
    async with database.connect() as conn:
        rows = await conn.execute(select(messages.c.id, messages.c.lease_owner))
        owners = {row.id: row.lease_owner for row in rows}

    for n, found in ((0, ["p-0"]), (1, ["p-1"]), (2, None)):
        message = await get_message(database, ids[n])
        assert message is not None
        assert (message.status, message.attempts, owners[ids[n]]) == (S.SENT, 1, None)
        own = {"attempt": 1, "outcome": "sent"} | ({"provider_ids": found} if found else {})
        assert [e.detail for e in message.events] == [{**own, **trace}, {"from": "sending"}]
    twice = await get_message(database, ids[3])
    assert twice is not None
    assert (twice.status, twice.attempts) == (S.SENT, 2)
    assert [(e.kind, e.detail) for e in twice.events] == [
        ("attempt", {"attempt": 1, "outcome": "sent", "provider_ids": ["p-3"], **trace}),
        ("status", {"from": "sending"}),
        ("attempt", {"attempt": 2, "outcome": "sent", "provider_ids": ["p-3b"], **trace}),
    ]
    # Another worker holds the lease: the attempt counts, the message stays with it.
    other = await get_message(database, ids[4])
    assert other is not None
    assert (other.status, other.attempts, owners[ids[4]]) == (S.SENDING, 1, "w2")
    assert [e.detail for e in other.events] == [
        {"attempt": 1, "outcome": "retry", "error": "HTTP 503", **trace}
    ]
    assert await statuses(database, ids[5:]) == ["sending"]


async def test_many_different_results_are_recorded_as_one_at_a_time(
    database: Database, connector: StoredConnector
) -> None:
    ids = await queue(database, connector, 12)
    await claim(database, connector)
    records = [
        AttemptRecord(
            m,
            "sent",
            provider_ids=(f"p-{n}",),
            recipient=f"+49151{n:08d}",
            next_attempt_at=NOW + timedelta(hours=1, seconds=n),
            detail={"request": {"body": f'{{"n": {n}, "text": "é \\"quoted\\""}}'}, "n": n},
            at=NOW + timedelta(seconds=n),
        )
        for n, m in enumerate(ids)
    ]
    await record_attempts(database, records, worker_id="w1")

    for n, m in enumerate(ids):
        message = await get_message(database, m)
        assert message is not None
        at = NOW + timedelta(seconds=n)
        assert (message.status, message.attempts, message.sent_at, message.updated_at) == (
            S.SENT,
            1,
            at,
            at,
        )
        assert message.next_attempt_at == NOW + timedelta(hours=1, seconds=n)
        assert message.provider_ids == (f"p-{n}",)
        assert [(e.kind, e.at) for e in message.events] == [("attempt", at), ("status", at)]
        assert message.events[0].detail == {
            "attempt": 1,
            "outcome": "sent",
            "provider_ids": [f"p-{n}"],
            **records[n].detail,
        }
    async with database.connect() as conn:
        rows = (await conn.execute(select(provider_ids))).all()
        owners = (await conn.execute(select(messages.c.lease_owner))).scalars().all()
    assert sorted((r.connector_id, r.provider_id, r.recipient) for r in rows) == sorted(
        (connector.id, f"p-{n}", f"+49151{n:08d}") for n in range(12)
    )
    assert set(owners) == {None}


async def test_a_late_batch_answer_keeps_its_attempt_when_a_report_came_first(
    database: Database, connector: StoredConnector
) -> None:
    ids = await queue(database, connector, 5)
    await claim(database, connector)
    async with database.transaction() as conn:
        await conn.execute(
            update(messages).where(messages.c.id == ids[0]).values(status=S.DELIVERED.value)
        )
    at = NOW + timedelta(seconds=1)
    trace = {"batch_size": 5}
    await record_attempts(
        database,
        [AttemptRecord(m, "sent", provider_ids=(f"p-{m}",), detail=trace, at=at) for m in ids],
        worker_id="w1",
    )
    delivered = await get_message(database, ids[0])
    assert delivered is not None
    assert delivered.status is S.DELIVERED
    assert [(e.kind, e.detail) for e in delivered.events] == [
        ("attempt", {"attempt": 1, "outcome": "sent", "provider_ids": [f"p-{ids[0]}"], **trace})
    ]
    assert await statuses(database, ids[1:]) == ["sent"] * 4


@pytest.mark.parametrize("reported", [False, True], ids=["alone", "report-in-between"])
@pytest.mark.parametrize("count", [1, 5], ids=["one-row", "one-request"])
async def test_sqlite_writes_back_only_rows_still_as_read(
    database: Database,
    connector: StoredConnector,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    reported: bool,
) -> None:
    if not database.is_sqlite:
        pytest.skip("PostgreSQL reads the states under row locks: nothing changes in between")
    ids = await queue(database, connector, count)
    await claim(database, connector)
    work_out = outbox._work_out
    calls = 0

    async def report_in_between(*args: Any, **kwargs: Any) -> Any:
        # The states are read (unlocked) and the changes worked out; a delivery report
        # for the first message is stored before the write transaction begins.
        nonlocal calls
        calls += 1
        found = await work_out(*args, **kwargs)
        if reported and calls == 1:
            async with database.transaction() as conn:
                await conn.execute(
                    update(messages).where(messages.c.id == ids[0]).values(status=S.DELIVERED.value)
                )
        return found

    monkeypatch.setattr(outbox, "_work_out", report_in_between)
    at = NOW + timedelta(seconds=1)
    trace = {"batch_size": count}  # one object: the messages of one request share it
    await record_attempts(
        database,
        [AttemptRecord(m, "sent", provider_ids=(f"p-{m}",), detail=trace, at=at) for m in ids],
        worker_id="w1",
    )
    # Worked out again, under the write lock, only when a row changed in between.
    assert calls == (2 if reported else 1)
    first = await get_message(database, ids[0])
    assert first is not None
    assert first.status is (S.DELIVERED if reported else S.SENT)
    assert (first.attempts, first.sent_at, first.provider_ids) == (1, at, (f"p-{ids[0]}",))
    for message_id in ids[1:]:
        other = await get_message(database, message_id)
        assert other is not None
        assert (other.status, other.attempts, other.provider_ids) == (
            S.SENT,
            1,
            (f"p-{message_id}",),
        )
        assert [(e.kind, e.status) for e in other.events] == [
            ("attempt", "sent"),
            ("status", "sent"),
        ]
    # Only the attempt, when the report came first; nothing twice.
    assert [(e.kind, e.status) for e in first.events] == (
        [("attempt", "delivered")] if reported else [("attempt", "sent"), ("status", "sent")]
    )
    async with database.connect() as conn:
        leases = (await conn.execute(select(messages.c.lease_owner))).scalars().all()
    assert leases == [None] * count


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


async def test_delivery_report_before_send_response_keeps_delivered(
    database: Database, connector: StoredConnector
) -> None:
    (message_id,) = await queue(database, connector)
    await claim(database, connector)
    async with database.transaction() as conn:
        # The delivery report wins the race against the send response.
        await conn.execute(
            update(messages).where(messages.c.id == message_id).values(status="delivered")
        )
    at = NOW + timedelta(seconds=1)
    await record_attempts(
        database,
        [AttemptRecord(message_id, "sent", provider_ids=("p-9",), at=at)],
        worker_id="w1",
    )
    stored = await get_message(database, message_id)
    assert stored is not None
    assert stored.status is S.DELIVERED
    assert (stored.attempts, stored.sent_at, stored.provider_ids) == (1, at, ("p-9",))
    assert [(e.kind, e.status) for e in stored.events] == [("attempt", "delivered")]
    async with database.connect() as conn:
        lease = (await conn.execute(select(messages.c.lease_owner))).scalar_one()
    assert lease is None


async def test_only_the_lease_holder_clears_the_lease_or_requeues(
    database: Database, connector: StoredConnector
) -> None:
    (message_id,) = await queue(database, connector)
    await claim(database, connector, worker="slow")
    await claim(database, connector, worker="fast", at=timedelta(seconds=LEASE))
    await record_attempts(
        database,
        [AttemptRecord(message_id, "retry", error="late", at=NOW + timedelta(seconds=LEASE))],
        worker_id="slow",
    )
    async with database.connect() as conn:
        row = (
            await conn.execute(
                select(messages.c.status, messages.c.lease_owner, messages.c.attempts)
            )
        ).one()
    assert tuple(row) == ("sending", "fast", 1)

    await record_attempts(
        database, [AttemptRecord(message_id, "sent", provider_ids=("p",))], worker_id="fast"
    )
    async with database.connect() as conn:
        row = (
            await conn.execute(
                select(messages.c.status, messages.c.lease_owner, messages.c.attempts)
            )
        ).one()
    assert tuple(row) == ("sent", None, 2)


async def test_recording_the_same_provider_id_twice_is_harmless(
    database: Database, connector: StoredConnector
) -> None:
    (message_id,) = await queue(database, connector)
    await claim(database, connector)
    record = AttemptRecord(message_id, "sent", provider_ids=("p-1", "p-1"), at=NOW)
    await record_attempts(database, [record, record], worker_id="w1")
    stored = await get_message(database, message_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.provider_ids) == (S.SENT, 2, ("p-1",))
    assert [(e.kind, e.status) for e in stored.events] == [
        ("attempt", "sent"),
        ("status", "sent"),
        ("attempt", "sent"),
    ]


async def test_records_for_unknown_messages_are_ignored(
    database: Database, connector: StoredConnector
) -> None:
    await record_attempts(database, [AttemptRecord(new_message_id(), "sent")], worker_id="w1")
    await record_attempts(database, [], worker_id="w1")


async def test_held_message_is_not_an_attempt_and_keeps_when_the_hold_began(
    database: Database, connector: StoredConnector
) -> None:
    (message_id,) = await queue(database, connector)
    await claim(database, connector)
    recheck = NOW + timedelta(seconds=120)
    await record_attempts(
        database,
        [
            AttemptRecord(
                message_id,
                "dispatch_error",
                error="credentials_failing: 401",
                next_attempt_at=recheck,
                at=NOW,
            )
        ],
        worker_id="w1",
    )
    assert await claim(database, connector, at=timedelta(seconds=119)) == []
    (held,) = await claim(database, connector, at=timedelta(seconds=120))
    assert (held.previous_status, held.held_since, held.attempts) == (S.DISPATCH_ERROR, NOW, 0)
    await record_attempts(
        database,
        [AttemptRecord(message_id, "dispatch_error", error="still 401", at=recheck)],
        worker_id="w1",
    )
    stored = await get_message(database, message_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.failure_reason) == (
        S.DISPATCH_ERROR,
        0,
        "still 401",
    )
    assert [(e.kind, e.status) for e in stored.events] == [("status", "dispatch_error")]

    (held,) = await claim(database, connector, at=timedelta(seconds=120))
    assert held.held_since == NOW
    await record_attempts(
        database, [AttemptRecord(message_id, "sent", provider_ids=("p",))], worker_id="w1"
    )
    stored = await get_message(database, message_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.failure_reason) == (S.SENT, 1, None)
    async with database.connect() as conn:
        held_since = (await conn.execute(select(messages.c.held_since))).scalar_one()
    assert held_since is None


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
