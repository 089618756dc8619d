"""Test harness for the dispatcher: clocks that move only when told, connectors, messages."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from smsrelay.connectors.definition import load_definition
from smsrelay.dispatch.transport import Transport
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.settings import Settings
from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import (
    MessageRecord,
    NewMessage,
    get_message,
    insert_messages,
    new_message_id,
)
from smsrelay.store.secret_box import SecretBox

LOCAL = ("127.0.0.1", "localhost")


class WallClock:
    """The dispatcher's clock: stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, when: datetime) -> datetime:
        self.now = max(self.now, when)
        return self.now


class FakeMonotonic:
    """The rate limiter's clock: moves only when the limiter sleeps (sleeps are recorded)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Harness:
    """A database, a dispatcher over a transport, and the clocks that drive it."""

    database: Database
    box: SecretBox
    clock: WallClock
    monotonic: FakeMonotonic
    settings: Settings

    def dispatcher(self, transport: Transport) -> Dispatcher:
        return Dispatcher(
            self.database,
            self.box,
            transport,
            self.settings,
            clock=self.clock,
            rng=random.Random(1),
            worker_id="test-worker",
            monotonic=self.monotonic,
            sleep=self.monotonic.sleep,
        )

    async def connector(self, yaml_text: str) -> StoredConnector:
        return await save_connector(self.database, self.box, load_definition(yaml_text))

    async def queue(
        self, connector: StoredConnector, *numbers: str, body: str = "Hello"
    ) -> list[str]:
        new = [
            NewMessage(
                id=new_message_id(),
                connector_id=connector.id,
                to=number,
                created_at=self.clock.now,
                body=body,
                sender_id="TXTSMS",
            )
            for number in numbers
        ]
        await insert_messages(self.database, new)
        return [m.id for m in new]

    async def message(self, message_id: str) -> MessageRecord:
        found = await get_message(self.database, message_id)
        assert found is not None
        return found


def attempt_times(record: MessageRecord) -> list[datetime]:
    """When each attempt of a message was recorded."""
    return [event.at for event in record.events if event.kind == "attempt"]


def attempt_details(record: MessageRecord) -> list[dict[str, object]]:
    return [dict(event.detail or {}) for event in record.events if event.kind == "attempt"]
