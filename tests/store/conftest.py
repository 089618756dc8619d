"""Fixtures for the store tests: a secret box and a saved connector to hang messages on."""

from __future__ import annotations

import pytest
from store_samples import NOW, acme

from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox, generate_secret_key


@pytest.fixture
def secret_key() -> str:
    """A fresh Fernet key."""
    return generate_secret_key()


@pytest.fixture
def box(secret_key: str) -> SecretBox:
    """A secret box holding `secret_key`."""
    return SecretBox([secret_key])


@pytest.fixture
async def connector(database: Database, box: SecretBox) -> StoredConnector:
    """A saved connector named `acme`."""
    return await save_connector(database, box, acme(), now=NOW)
