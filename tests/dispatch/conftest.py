"""Fixtures for dispatcher tests: clocks, a secret box, settings, a real transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet

from smsrelay.dispatch.transport import AiohttpTransport
from smsrelay.settings import Settings
from smsrelay.store.database import Database
from smsrelay.store.secret_box import SecretBox

from .harness import LOCAL, FakeMonotonic, Harness, WallClock


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode()])


@pytest.fixture
def settings() -> Settings:
    # Delivery-report URLs point at a closed port: these tests look at the send side only.
    return Settings(allow_hosts=LOCAL, public_url="http://127.0.0.1:9", claim_batch=500)


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    async with AiohttpTransport(allow_hosts=LOCAL) as real:
        yield real


@pytest.fixture
def harness(
    database: Database,
    box: SecretBox,
    clock: WallClock,
    monotonic: FakeMonotonic,
    settings: Settings,
) -> Harness:
    return Harness(database, box, clock, monotonic, settings)
