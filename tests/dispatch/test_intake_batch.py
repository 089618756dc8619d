"""Batch intake judges each message exactly as single intake does, by index."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from smsrelay.connectors.definition import parse_definition
from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.intake import IntakeRefused, MessageIntake, MessageRequest, prepare_all
from smsrelay.store.connectors import save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import NewMessage
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.senders import create_sender
from smsrelay.store.suppression import suppress_number

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SUPPRESSED = "+4915199999999"


def connector_document(name: str, body: dict[str, str]) -> dict[str, object]:
    return {
        "name": name,
        "request": {"url": "https://sms.example.com/send", "body": {"json": body}},
        "response": {"message_id": "$.id"},
    }


@pytest.fixture
async def new_intake(database: Database) -> Callable[[], MessageIntake]:
    """Makes an intake (one per API request) over two connectors, three senders, a
    suppressed number."""
    box = SecretBox([Fernet.generate_key().decode()])
    plain = connector_document("plain", {"to": "{{to}}", "text": "{{body}}"})
    templated = connector_document(
        "templated", {"to": "{{to}}", "tpl": "{{template_id}}", "name": "{{params.name}}"}
    )
    for document in (plain, templated):
        await save_connector(database, box, parse_definition(document))
    await create_sender(database, name="tx", connector="plain", sender_id="TX", is_default=True)
    await create_sender(
        database,
        name="promo",
        connector="plain",
        sender_id="PROMO",
        type="promotional",
        is_default=True,
    )
    await create_sender(database, name="tpl", connector="templated", sender_id="TPL")
    await suppress_number(database, SUPPRESSED, reason="asked to stop")
    return lambda: MessageIntake(database, box)


REQUESTS = [
    MessageRequest(to="+4915112345678", body="hello"),
    MessageRequest(to="+4915112345679", body="hello"),
    MessageRequest(to="+4915112345680", body="Grüße 👋"),
    MessageRequest(to="nope", body="x"),
    MessageRequest(to="+4915112345681"),
    MessageRequest(to=SUPPRESSED, body="sale", type="promotional"),
    MessageRequest(to=SUPPRESSED, body="your code"),
    MessageRequest(to="+4915112345682", body="sale", type="promotional"),
    MessageRequest(to="+4915112345683", sender="tpl", body="x"),
    MessageRequest(to="+4915112345684", sender="tpl", template_id="T", params={"name": "Ada"}),
    MessageRequest(to="+4915112345685", sender="ghost", body="x"),
    MessageRequest(to="+4915112345686", body="later", send_at=NOW + timedelta(hours=1)),
    MessageRequest(to="+4915112345687", body="past", send_at=NOW - timedelta(hours=1)),
    MessageRequest(to="+4915112345688", body="naive", send_at=datetime(2030, 1, 1)),
    MessageRequest(to="+4915112345689", body="[" * 100),
]


def without_id(message: NewMessage) -> NewMessage:
    return message._replace(id="")


async def test_a_batch_is_judged_message_by_message_as_single_intake_judges(
    new_intake: Callable[[], MessageIntake],
) -> None:
    accepted, refused = await prepare_all(new_intake(), REQUESTS, now=NOW)
    one_by_one: dict[int, NewMessage | list[FieldError]] = {}
    for index, request in enumerate(REQUESTS):
        try:
            one_by_one[index] = await new_intake().prepare(request, now=NOW)
        except IntakeRefused as exc:
            one_by_one[index] = exc.errors
    in_batch: dict[int, NewMessage | list[FieldError]] = {
        **{i: without_id(m) for i, m in accepted},
        **dict(refused),
    }
    expected = {i: without_id(v) if isinstance(v, NewMessage) else v for i, v in one_by_one.items()}
    assert in_batch == expected
    assert [i for i, _ in refused] == [3, 4, 5, 8, 10, 13]
    assert (
        dict(refused)[5] == [FieldError("to", dict(refused)[5][0].message)]
        and "suppressed" in dict(refused)[5][0].message
    )
    assert dict(refused)[10] == [FieldError("sender", "no sender named 'ghost'")]


async def test_a_batch_measures_each_text_and_ids_follow_the_order(
    new_intake: Callable[[], MessageIntake],
) -> None:
    accepted, _ = await prepare_all(new_intake(), REQUESTS, now=NOW)
    by_index = dict(accepted)
    assert (by_index[0].encoding, by_index[0].segments) == ("gsm7", 1)
    assert (by_index[1].encoding, by_index[1].segments) == ("gsm7", 1)
    assert (by_index[2].encoding, by_index[2].segments) == ("ucs2", 1)
    assert (by_index[14].encoding, by_index[14].segments) == ("gsm7", 2)  # 200 septets
    assert by_index[11].send_at == NOW + timedelta(hours=1)
    assert by_index[12].send_at is None
    assert by_index[9].connector_id != by_index[0].connector_id
    ids = [m.id for _, m in accepted]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {m.created_at for _, m in accepted} == {NOW}
