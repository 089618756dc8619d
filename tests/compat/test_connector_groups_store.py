"""Connector groups in the store: senders on a group, failover in `record_attempts`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smsrelay.connectors.definition import parse_definition
from smsrelay.store.connector_groups import (
    ConnectorGroupError,
    ConnectorGroupInUse,
    delete_connector_group,
    get_connector_group,
    next_member,
    save_connector_group,
)
from smsrelay.store.connectors import delete_connector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.errors import ConnectorInUse
from smsrelay.store.messages import (
    AttemptRecord,
    NewMessage,
    claim_due_messages,
    get_message,
    insert_messages,
    new_message_id,
    record_attempts,
)
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.senders import create_sender, get_sender, resolve_sender

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


async def _connector(db: Database, box: SecretBox, name: str) -> int:
    definition = parse_definition(
        {
            "name": name,
            "request": {
                "url": "https://sms.example.com/send",
                "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
            },
        }
    )
    return (await save_connector(db, box, definition, now=NOW)).id


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_secret_key()])


async def _claim_and_fail(db: Database, connector_id: int, error: str) -> None:
    [claimed] = await claim_due_messages(
        db, connector_id=connector_id, worker_id="w1", limit=10, lease_seconds=30, now=NOW
    )
    await record_attempts(
        db, [AttemptRecord(claimed.id, "failed", error=error, at=NOW)], worker_id="w1"
    )


def test_next_member_follows_the_group_order() -> None:
    members = [(1, "a"), (2, "b"), (3, "c")]
    assert next_member(members, 1) == ((1, "a"), (2, "b"))
    assert next_member(members, 3) is None
    assert next_member(members, 9) is None


async def test_a_failed_message_moves_to_the_next_connector_then_fails_on_the_last(
    database: Database, box: SecretBox
) -> None:
    first = await _connector(database, box, "first")
    second = await _connector(database, box, "second")
    await save_connector_group(database, "pair", ["first", "second"], now=NOW)
    sender = await create_sender(database, name="ha", connector="pair", sender_id="HA", now=NOW)
    assert (sender.connector_id, sender.connector_name, sender.connector_group) == (
        first,
        "pair",
        "pair",
    )
    assert (await resolve_sender(database, "ha")).connector_id == first
    message_id = new_message_id()
    await insert_messages(
        database,
        [
            NewMessage(
                id=message_id,
                connector_id=first,
                to="+4915100000001",
                body="x",
                created_at=NOW,
                sender_name="ha",
            )
        ],
    )
    await _claim_and_fail(database, first, "HTTP 400 invalid number")
    moved = await get_message(database, message_id)
    assert moved is not None
    assert (moved.status.value, moved.connector_id, moved.attempts) == ("queued", second, 0)
    [note] = [e for e in moved.events if e.kind == "status"]
    assert note.detail is not None
    assert note.detail["reason"] == "failover from first to second: HTTP 400 invalid number"

    await _claim_and_fail(database, second, "HTTP 400 invalid number")
    failed = await get_message(database, message_id)
    assert failed is not None
    assert (failed.status.value, failed.connector_id) == ("failed", second)
    assert failed.failure_reason == "HTTP 400 invalid number"


async def test_a_sender_on_a_single_connector_fails_as_before(
    database: Database, box: SecretBox
) -> None:
    only = await _connector(database, box, "only")
    await create_sender(database, name="plain", connector="only", sender_id="X", now=NOW)
    message_id = new_message_id()
    await insert_messages(
        database,
        [
            NewMessage(
                id=message_id,
                connector_id=only,
                to="+4915100000001",
                body="x",
                created_at=NOW,
                sender_name="plain",
            )
        ],
    )
    await _claim_and_fail(database, only, "rejected")
    failed = await get_message(database, message_id)
    assert failed is not None and failed.status.value == "failed"


async def test_groups_keep_their_senders_on_the_first_connector(
    database: Database, box: SecretBox
) -> None:
    await _connector(database, box, "a")
    b = await _connector(database, box, "b")
    await save_connector_group(database, "g", ["a", "b"], now=NOW)
    await create_sender(database, name="s", connector="g", sender_id="S", now=NOW)
    group, created = await save_connector_group(database, "g", ["b", "a"], now=NOW)
    assert not created and group.connectors == ("b", "a") and group.senders == ("s",)
    sender = await get_sender(database, "s")
    assert sender is not None and sender.connector_id == b
    with pytest.raises(ConnectorInUse):
        await delete_connector(database, "b")  # the sender's first connector
    assert await delete_connector(database, "a")  # a later member just leaves the group
    shown = await get_connector_group(database, "g")
    assert shown is not None and shown.connectors == ("b",)
    with pytest.raises(ConnectorGroupInUse):
        await delete_connector_group(database, "g")


async def test_bad_groups_are_refused_by_field(database: Database, box: SecretBox) -> None:
    await _connector(database, box, "a")
    with pytest.raises(ConnectorGroupError) as exc:
        await save_connector_group(database, "g", ["a", "missing"])
    assert exc.value.field == "connectors[1]"
    with pytest.raises(ConnectorGroupError) as exc:
        await save_connector_group(database, "g", ["a", "a"])
    assert exc.value.field == "connectors[1]"
    with pytest.raises(ConnectorGroupError) as exc:
        await save_connector_group(database, "a", ["a"])
    assert exc.value.field == "name"
    with pytest.raises(ConnectorGroupError) as exc:
        await save_connector_group(database, "Bad Name", ["a"])
    assert exc.value.field == "name"
