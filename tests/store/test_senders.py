"""Senders: named sender IDs on connectors, one default per type, resolution for messages."""

from __future__ import annotations

import pytest
from store_samples import acme

from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.errors import NoSender, SenderError
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.senders import (
    create_sender,
    delete_sender,
    get_sender,
    list_senders,
    resolve_sender,
    update_sender,
)


async def defaults(database: Database) -> dict[str, str]:
    return {s.type: s.name for s in await list_senders(database) if s.is_default}


async def test_created_sender_reads_back(database: Database, connector: StoredConnector) -> None:
    sender = await create_sender(
        database, name="otp", connector="acme", sender_id="TXTSMS", is_default=True
    )
    assert (sender.name, sender.sender_id, sender.type, sender.is_default) == (
        "otp",
        "TXTSMS",
        "transactional",
        True,
    )
    assert (sender.connector_id, sender.connector_name) == (connector.id, "acme")
    assert await get_sender(database, "otp") == sender
    assert await get_sender(database, "nope") is None


async def test_a_new_default_replaces_the_old_one_of_its_type_only(
    database: Database, connector: StoredConnector
) -> None:
    await create_sender(database, name="a", connector="acme", sender_id="A", is_default=True)
    await create_sender(
        database, name="promo", connector="acme", sender_id="P", type="promotional", is_default=True
    )
    await create_sender(database, name="b", connector="acme", sender_id="B", is_default=True)
    assert await defaults(database) == {"transactional": "b", "promotional": "promo"}


async def test_update_moves_the_default(database: Database, connector: StoredConnector) -> None:
    await create_sender(database, name="a", connector="acme", sender_id="A", is_default=True)
    await create_sender(database, name="b", connector="acme", sender_id="B")
    updated = await update_sender(database, "b", is_default=True, sender_id="BB")
    assert updated is not None and (updated.is_default, updated.sender_id) == (True, "BB")
    assert await defaults(database) == {"transactional": "b"}

    await create_sender(
        database, name="p", connector="acme", sender_id="P", type="promotional", is_default=True
    )
    # A default moved to the other type replaces that type's default.
    await update_sender(database, "b", type="promotional")
    assert await defaults(database) == {"promotional": "b"}
    assert await update_sender(database, "nope", sender_id="X") is None


async def test_update_can_move_a_sender_to_another_connector(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    other = await save_connector(database, box, acme("backup"))
    await create_sender(database, name="a", connector="acme", sender_id="A")
    moved = await update_sender(database, "a", connector="backup")
    assert moved is not None and (moved.connector_id, moved.connector_name) == (other.id, "backup")
    with pytest.raises(SenderError) as error:
        await update_sender(database, "a", connector="missing")
    assert error.value.field == "connector"


async def test_resolve_prefers_the_named_sender_then_the_default(
    database: Database, connector: StoredConnector
) -> None:
    with pytest.raises(NoSender, match="no default transactional sender"):
        await resolve_sender(database, None)
    await create_sender(database, name="main", connector="acme", sender_id="M", is_default=True)
    await create_sender(database, name="alt", connector="acme", sender_id="ALT")
    assert (await resolve_sender(database, None)).name == "main"
    assert (await resolve_sender(database, "alt")).name == "alt"
    with pytest.raises(NoSender, match="no sender named 'ghost'"):
        await resolve_sender(database, "ghost")
    with pytest.raises(NoSender, match="promotional"):
        await resolve_sender(database, None, "promotional")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "main", "connector": "acme", "sender_id": "X"}, "name"),
        ({"name": "bad name", "connector": "acme", "sender_id": "X"}, "name"),
        ({"name": "n", "connector": "missing", "sender_id": "X"}, "connector"),
        ({"name": "n", "connector": "acme", "sender_id": " "}, "sender_id"),
        ({"name": "n", "connector": "acme", "sender_id": "X", "type": "marketing"}, "type"),
    ],
)
async def test_invalid_senders_are_refused_by_field(
    database: Database, connector: StoredConnector, fields: dict[str, str], field: str
) -> None:
    await create_sender(database, name="main", connector="acme", sender_id="M")
    with pytest.raises(SenderError) as error:
        await create_sender(database, **fields)
    assert error.value.field == field
    assert [s.name for s in await list_senders(database)] == ["main"]


async def test_delete_sender(database: Database, connector: StoredConnector) -> None:
    await create_sender(database, name="main", connector="acme", sender_id="M")
    assert await delete_sender(database, "main") is True
    assert await delete_sender(database, "main") is False
    assert await list_senders(database) == []
