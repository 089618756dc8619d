"""`smsrelay secrets rotate`: every stored secret moves onto the newest key; the old one can go."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from smsrelay.cli import app as cli_app
from smsrelay.connectors.definition import load_definition
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.store.connectors import get_connector, list_connectors, save_connector
from smsrelay.store.database import open_database
from smsrelay.store.errors import SecretKeyError
from smsrelay.store.secret_box import SecretBox, generate_secret_key
from smsrelay.store.tables import connector_versions
from smsrelay.store.webhooks import create_webhook, list_webhooks

OLD, NEW = generate_secret_key(), generate_secret_key()


async def store_with_old_key(database_url: str) -> None:
    db = open_database(database_url)
    box = SecretBox([OLD])
    try:
        definition = load_definition(sandbox_connector_yaml("http://127.0.0.1:9/sandbox"))
        for name, token in (("first", "tok-1"), ("second", "tok-2")):
            named = definition.model_copy(update={"name": name})
            await save_connector(db, box, named)
            changed = named.model_copy(update={"secrets": {**named.secrets, "api_key": token}})
            await save_connector(db, box, changed)  # a second version, with its own secrets
        await create_webhook(
            db,
            box,
            url="https://hooks.example/sms",
            events=["*"],
            format="native",
            scope="all",
            secret="whsec-0123456789abcdef",
        )
    finally:
        await db.close()


async def read_with(database_url: str, keys: list[str]) -> tuple[dict[str, str], str | None]:
    """Every connector's api_key, every version's secrets opened, and the webhook secret."""
    db = open_database(database_url)
    box = SecretBox(keys)
    try:
        tokens = {c.name: c.definition.secrets["api_key"] for c in await list_connectors(db, box)}
        async with db.connect() as conn:
            for row in await conn.execute(connector_versions.select()):
                box.open(row.secrets)
        assert (await get_connector(db, box, "first")) is not None
        hooks = await list_webhooks(db, box)
        return tokens, hooks[0].secret
    finally:
        await db.close()


def rotate(database_url: str, keys: str) -> str:
    result = CliRunner().invoke(
        cli_app,
        ["secrets", "rotate"],
        env={"SMSRELAY_DATABASE_URL": database_url, "SMSRELAY_SECRET_KEYS": keys},
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_rotate_reencrypts_connector_and_webhook_secrets_with_the_newest_key(
    database_url: str,
) -> None:
    asyncio.run(store_with_old_key(database_url))
    with pytest.raises(SecretKeyError):
        asyncio.run(read_with(database_url, [NEW]))  # not yet: sealed with the old key
    output = rotate(database_url, f"{NEW},{OLD}")
    assert "2 connector(s) and 1 webhook(s)" in output
    assert OLD not in output and NEW not in output
    tokens, hook_secret = asyncio.run(read_with(database_url, [NEW]))  # old key dropped
    assert tokens == {"first": "tok-1", "second": "tok-2"}
    assert hook_secret == "whsec-0123456789abcdef"
    assert "2 connector(s)" in rotate(database_url, NEW)  # again: nothing breaks


def test_rotate_without_the_old_key_says_what_to_do(database_url: str) -> None:
    asyncio.run(store_with_old_key(database_url))
    result = CliRunner().invoke(
        cli_app,
        ["secrets", "rotate"],
        env={"SMSRELAY_DATABASE_URL": database_url, "SMSRELAY_SECRET_KEYS": NEW},
    )
    assert result.exit_code == 1
    assert "cannot be decrypted with the configured keys" in result.output
    assert OLD not in result.output
    tokens, _ = asyncio.run(read_with(database_url, [OLD]))  # nothing was changed
    assert tokens == {"first": "tok-1", "second": "tok-2"}
