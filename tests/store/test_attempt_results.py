"""Attempt results written back in one group commit: states, history, provider ids."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from outbox_samples import LEASE, claim, queue, statuses
from sqlalchemy import event, select, update
from store_samples import NOW

from smsrelay.store import attempt_results
from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import (
    AttemptRecord,
    get_message,
    new_message_id,
    record_attempts,
)
from smsrelay.store.tables import message_events, messages, provider_ids

S = MessageStatus


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


@pytest.mark.parametrize("known", [False, True], ids=["read", "as-claimed"])
@pytest.mark.parametrize("reported", [False, True], ids=["alone", "report-in-between"])
@pytest.mark.parametrize("count", [1, 5], ids=["one-row", "one-request"])
async def test_sqlite_writes_back_only_rows_still_as_read(
    database: Database,
    connector: StoredConnector,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    reported: bool,
    known: bool,
) -> None:
    """Read before the write transaction, or known as the claim left them (`known`), the
    rows are written back only if still so; else the group is done again under the lock."""
    if not database.is_sqlite:
        pytest.skip("PostgreSQL reads the states under row locks: nothing changes in between")
    ids = await queue(database, connector, count)
    claimed = {m.id: m.as_claimed for m in await claim(database, connector)}
    assert all(claimed.values())
    work_out = attempt_results._work_out
    calls = 0
    fetch = attempt_results._LOCK_STATES.fetch
    read: list[int] = []

    async def counted_fetch(conn: Any, db: Database, values: Any) -> Any:
        rows = await fetch(conn, db, values)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(attempt_results._LOCK_STATES, "fetch", counted_fetch)

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

    monkeypatch.setattr(attempt_results, "_work_out", report_in_between)
    at = NOW + timedelta(seconds=1)
    trace = {"batch_size": count}  # one object: the messages of one request share it
    records = [
        AttemptRecord(
            m,
            "sent",
            provider_ids=(f"p-{m}",),
            detail=trace,
            at=at,
            as_claimed=claimed[m] if known else None,
        )
        for m in ids
    ]
    await record_attempts(database, records, worker_id="w1")
    # Worked out again, under the write lock, only when a row changed in between; rows
    # known as claimed are read only then.
    assert calls == (2 if reported else 1)
    assert read == ([] if known else [count]) + ([count] if reported else [])
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


async def test_a_requests_messages_share_their_status_row_without_building_events(
    database: Database, connector: StoredConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request's messages, one record each: after the first, no event is built per
    message (what `_share` would fold into one row is listed instead), with rows known
    from the claim or read; the histories read as before."""
    ids = await queue(database, connector, 6)
    claimed = {m.id: m.as_claimed for m in await claim(database, connector)}
    built = 0
    events = attempt_results._Effect.events

    def counted(effect: Any, message_id: str, found_ids: tuple[str, ...]) -> Any:
        nonlocal built
        built += 1
        return events(effect, message_id, found_ids)

    monkeypatch.setattr(attempt_results._Effect, "events", counted)
    at = NOW + timedelta(seconds=1)
    trace = {"batch_size": 6}
    records = [
        AttemptRecord(
            m, "sent", provider_ids=(f"p-{m}",), detail=trace, at=at, as_claimed=claimed[m]
        )
        for m in ids
    ]
    await record_attempts(database, records, worker_id="w1")
    assert built == 0
    for message_id in ids:
        message = await get_message(database, message_id)
        assert message is not None
        assert [(e.kind, e.status, e.detail) for e in message.events] == [
            (
                "attempt",
                "sent",
                {"attempt": 1, "outcome": "sent", "provider_ids": [f"p-{message_id}"], **trace},
            ),
            ("status", "sent", {"from": "sending"}),
        ]
