"""Connectors at rest: versions, encrypted secrets that `***` keeps, DLR tokens, deletion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from store_samples import NOW, acme, acme_document

from smsrelay.connectors.definition import SECRET_MASK, parse_definition
from smsrelay.connectors.errors import DefinitionError
from smsrelay.store.connectors import (
    StoredConnector,
    delete_connector,
    get_connector,
    get_connector_by_dlr_token,
    get_connector_by_id,
    list_connectors,
    reencrypt_all,
    rotate_dlr_token,
    save_connector,
)
from smsrelay.store.database import Database
from smsrelay.store.errors import ConnectorInUse, ConnectorNotFound
from smsrelay.store.messages import NewMessage, cancel_message, insert_messages, new_message_id
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.senders import create_sender, delete_sender
from smsrelay.store.tables import connector_versions, connectors


async def test_saved_connector_reads_back_by_name_id_and_token(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    assert connector.version == 1
    assert connector.created_at == NOW
    assert connector.definition == acme()
    assert len(connector.dlr_token) >= 32
    assert await get_connector(database, box, "acme") == connector
    assert await get_connector_by_id(database, box, connector.id) == connector
    assert await get_connector_by_dlr_token(database, box, connector.dlr_token) == connector
    assert await get_connector(database, box, "nope") is None
    assert await get_connector_by_dlr_token(database, box, "guess") is None


async def test_secrets_are_encrypted_at_rest_and_kept_out_of_the_definition(
    database: Database, connector: StoredConnector
) -> None:
    async with database.connect() as conn:
        row = (await conn.execute(select(connectors))).one()
        history = (await conn.execute(select(connector_versions.c.secrets))).scalars().all()
    assert "secrets" not in row.definition
    assert b"live-key-123" not in bytes(row.secrets)
    assert all(b"live-key-123" not in bytes(blob) for blob in history)


async def test_saving_again_makes_a_new_version_and_keeps_history(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    changed = acme(description="now with a description")
    later = NOW + timedelta(minutes=5)
    saved = await save_connector(database, box, changed, now=later)
    assert (saved.id, saved.version) == (connector.id, 2)
    assert saved.definition.description == "now with a description"
    assert saved.dlr_token == connector.dlr_token
    assert (saved.created_at, saved.updated_at) == (NOW, later)
    async with database.connect() as conn:
        versions = (
            await conn.execute(
                select(connector_versions.c.version, connector_versions.c.definition).order_by(
                    connector_versions.c.version
                )
            )
        ).all()
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].definition["description"] == "now with a description"


async def test_saving_an_identical_definition_changes_nothing(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    again = await save_connector(database, box, acme(), now=NOW + timedelta(hours=1))
    assert again == connector


async def test_masked_secret_keeps_the_stored_value(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    masked = parse_definition(connector.definition.export(mask_secrets=True))
    assert masked.secrets == {"api_key": SECRET_MASK}
    saved = await save_connector(database, box, masked)
    assert saved.definition.secrets == {"api_key": "live-key-123"}
    assert saved.version == 1


async def test_omitted_secret_is_kept_unless_secrets_are_replaced(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    with_extra = acme(secrets={"api_key": "live-key-123", "account": "A1"})
    await save_connector(database, box, with_extra)
    kept = await save_connector(database, box, acme(secrets={"api_key": "rotated"}))
    assert kept.definition.secrets == {"api_key": "rotated", "account": "A1"}
    replaced = await save_connector(
        database, box, acme(secrets={"api_key": "rotated"}), replace_secrets=True
    )
    assert replaced.definition.secrets == {"api_key": "rotated"}


async def test_merged_secrets_are_validated_against_the_templates(
    database: Database, box: SecretBox
) -> None:
    document = acme_document(secrets={"api_key": "live-key-123", "account": "A1"})
    document["request"]["url"] = "https://sms.example.com/{{secret.account}}/send"
    full = parse_definition(document)
    await save_connector(database, box, full)
    # A caller may hand over only what changed; the stored `account` completes it.
    partial = full.model_copy(update={"secrets": {"api_key": SECRET_MASK}})
    saved = await save_connector(database, box, partial)
    assert saved.definition.secrets == {"api_key": "live-key-123", "account": "A1"}
    with pytest.raises(DefinitionError) as error:
        await save_connector(
            database,
            box,
            full.model_copy(update={"secrets": {"api_key": "x"}}),
            replace_secrets=True,
        )
    assert any("'account' is not defined" in str(e) for e in error.value.errors)


async def test_masked_secret_without_a_stored_value_is_refused(
    database: Database, box: SecretBox
) -> None:
    with pytest.raises(DefinitionError) as error:
        await save_connector(database, box, acme(secrets={"api_key": SECRET_MASK}))
    assert [e.path for e in error.value.errors] == ["secrets.api_key"]
    assert await list_connectors(database, box) == []


async def test_list_is_ordered_by_name(database: Database, box: SecretBox) -> None:
    for name in ("zeta", "alpha", "mid"):
        await save_connector(database, box, acme(name))
    assert [c.name for c in await list_connectors(database, box)] == ["alpha", "mid", "zeta"]


async def test_rotating_the_dlr_token_retires_the_old_url(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    token = await rotate_dlr_token(database, "acme")
    assert token != connector.dlr_token
    assert await get_connector_by_dlr_token(database, box, connector.dlr_token) is None
    found = await get_connector_by_dlr_token(database, box, token)
    assert found is not None and found.id == connector.id
    with pytest.raises(ConnectorNotFound):
        await rotate_dlr_token(database, "nope")


async def test_delete_is_refused_while_messages_wait_or_senders_point_to_it(
    database: Database, box: SecretBox, connector: StoredConnector
) -> None:
    message_id = new_message_id()
    queued = NewMessage(
        id=message_id, connector_id=connector.id, to="+4915112345678", body="hi", created_at=NOW
    )
    await insert_messages(database, [queued])
    with pytest.raises(ConnectorInUse, match="queued or sending"):
        await delete_connector(database, "acme")
    assert (await cancel_message(database, message_id, NOW)).canceled
    await create_sender(database, name="main", connector="acme", sender_id="ACME")
    with pytest.raises(ConnectorInUse, match="main"):
        await delete_connector(database, "acme")
    await delete_sender(database, "main")

    assert await delete_connector(database, "acme") is True
    assert await get_connector(database, box, "acme") is None
    assert await delete_connector(database, "acme") is False


async def test_deleted_connector_id_is_not_reused(database: Database, box: SecretBox) -> None:
    first = await save_connector(database, box, acme("one"))
    await delete_connector(database, "one")
    second = await save_connector(database, box, acme("two"))
    assert second.id != first.id


async def test_reencrypt_all_moves_every_secret_to_the_newest_key(
    database: Database, box: SecretBox, secret_key: str, connector: StoredConnector
) -> None:
    await save_connector(database, box, acme(secrets={"api_key": "second"}))
    await save_connector(database, box, acme("other"))
    new_key = generate_secret_key()
    assert await reencrypt_all(database, SecretBox([new_key, secret_key])) == 2
    only_new = SecretBox([new_key])
    stored = await get_connector(database, only_new, "acme")
    assert stored is not None and stored.definition.secrets == {"api_key": "second"}
    async with database.connect() as conn:
        blobs = (await conn.execute(select(connector_versions.c.secrets))).scalars().all()
    assert len(blobs) == 3
    assert all(only_new.open(blob) for blob in blobs)
