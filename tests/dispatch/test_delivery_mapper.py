"""The delivery mapper over a real database: matching, lifecycle rules, orphans, the sweep.

Callbacks are stored as intake stores them; the mapper runs with an injected `now`, so
orphan retries and delivery windows are reached by moving the clock, never by sleeping.
Results are read back as the API reads them (`get_message`, `list_callbacks`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from smsrelay.connectors.definition import parse_definition
from smsrelay.dispatch.delivery_mapper import DeliveryMapper
from smsrelay.settings import Settings
from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.delivery_reports import (
    CallbackState,
    NewCallback,
    StoredCallback,
    insert_callbacks,
    list_callbacks,
)
from smsrelay.store.messages import (
    AttemptRecord,
    MessageRecord,
    NewMessage,
    claim_due_messages,
    get_message,
    insert_messages,
    new_message_id,
    record_attempts,
)
from smsrelay.store.secret_box import SecretBox

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
WORKER = "test-worker"

NATIVE = {
    "message_id": "$.id",
    "recipient": "$.to",
    "status": "$.status",
    "reason": "$.reason",
    "error_code": "$.error_code",
    "delivered": ["delivered"],
    "failed": ["undelivered", "rejected"],
    "pending": ["sent"],
}
SINCH_BATCH = {
    "reports": "$.statuses[*].recipients[*]",
    "message_id": "^^.batch_id",
    "recipient": "$",
    "status": "^.status",
    "error_code": "^.code",
    "delivered": ["Delivered"],
    "failed": ["Aborted", "Cancelled", "Rejected", "Deleted", "Failed", "Expired"],
    "pending": ["Queued", "Dispatched", "Unknown"],
}
MSG91 = {
    "decode": ["data"],
    "reports": "$.data[*].report[*]",
    "message_id": "^.requestId",
    "recipient": "number",
    "status": "status",
    "reason": "desc",
    "delivered": ["1"],
    "failed": ["2", "9", "16", "17", "25"],
}


class Provider:
    """One connector, its messages and its callbacks, driven at `now`."""

    def __init__(self, database: Database, box: SecretBox, connector: StoredConnector) -> None:
        self.database = database
        self.box = box
        self.connector = connector
        self.now = T0

    async def queue(self, *numbers: str) -> list[str]:
        new = [
            NewMessage(
                id=new_message_id(),
                connector_id=self.connector.id,
                to=number,
                created_at=self.now,
                body="hello",
            )
            for number in numbers
        ]
        await insert_messages(self.database, new)
        return [m.id for m in new]

    async def claim(self) -> None:
        """Lease every due message (they are `sending` until their answer is recorded)."""
        await claim_due_messages(
            self.database,
            connector_id=self.connector.id,
            worker_id=WORKER,
            limit=100,
            lease_seconds=60,
            now=self.now,
        )

    async def record_sent(self, message_id: str, *ids: str, to: str | None = None) -> None:
        delivery = self.connector.definition.delivery
        window = timedelta(hours=delivery.window_hours) if delivery else None
        await record_attempts(
            self.database,
            [
                AttemptRecord(
                    message_id=message_id,
                    outcome="sent",
                    provider_ids=ids,
                    recipient=to,
                    next_attempt_at=self.now + window if window else None,
                    at=self.now,
                )
            ],
            worker_id=WORKER,
        )

    async def sent(self, number: str, *ids: str) -> str:
        [message_id] = await self.queue(number)
        await self.claim()
        await self.record_sent(message_id, *ids, to=number)
        return message_id

    async def callback(
        self,
        body: bytes | dict[str, Any] | list[Any],
        content_type: str = "application/json",
        query: str = "",
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = f"http://127.0.0.1:8000/dlr/{self.connector.dlr_token}"
        await insert_callbacks(
            self.database,
            [
                NewCallback(
                    connector_id=self.connector.id,
                    received_at=self.now,
                    method="POST",
                    url=url + (f"?{query}" if query else ""),
                    headers={"content-type": content_type},
                    body=raw,
                    content_type=content_type,
                )
            ],
        )

    async def message(self, message_id: str) -> MessageRecord:
        found = await get_message(self.database, message_id)
        assert found is not None
        return found

    async def callbacks(self) -> list[StoredCallback]:
        return await list_callbacks(self.database, self.connector.id, limit=100)


async def provider(
    database: Database, box: SecretBox, delivery: dict[str, Any] | None, name: str = "acme"
) -> Provider:
    document: dict[str, Any] = {
        "name": name,
        "request": {
            "url": "https://sms.example.com/send",
            "body": {"json": {"to": "{{to}}", "text": "{{body}}", "ref": "{{message_id}}"}},
        },
        "response": {"message_id": "$.id"},
    }
    if delivery is not None:
        document["delivery"] = delivery
    return Provider(database, box, await save_connector(database, box, parse_definition(document)))


def native(provider_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": provider_id, "to": "+4915112340042", "status": status, **extra}


def reports(record: MessageRecord) -> list[tuple[str, str]]:
    """(raw status, outcome) of each report in the history."""
    return [
        (str(e.detail["raw_status"]), str(e.detail["outcome"]))
        for e in record.events
        if e.kind == "report" and e.detail is not None
    ]


def statuses(record: MessageRecord) -> list[str]:
    return [str(e.status) for e in record.events if e.kind == "status"]


@pytest.fixture
def mapper(database: Database, box: SecretBox, settings: Settings) -> DeliveryMapper:
    return DeliveryMapper(database, box, settings)


# ---------------------------------------------------------------- matching


async def test_report_before_the_send_response_is_an_orphan_until_the_id_is_recorded(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    [message_id] = await acme.queue("+4915112340042")
    await acme.claim()
    await acme.callback(native("P-1", "delivered"))

    assert await mapper.run_once(acme.now) == 1
    [orphan] = await acme.callbacks()
    assert orphan.state is CallbackState.ORPHAN
    assert orphan.next_check_at == acme.now + timedelta(seconds=1)
    assert (await acme.message(message_id)).status == "sending"

    await acme.record_sent(message_id, "P-1", to="+4915112340042")
    acme.now += timedelta(seconds=1)
    await mapper.run_once(acme.now)

    delivered = await acme.message(message_id)
    assert delivered.status == "delivered"
    assert delivered.final_at is not None and delivered.next_attempt_at is None
    [mapped] = await acme.callbacks()
    assert mapped.state is CallbackState.MAPPED and mapped.report_count == 1


async def test_an_orphan_stops_being_looked_at_after_ten_minutes(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    await acme.callback(native("never-sent", "delivered"))
    await mapper.run_once(acme.now)

    acme.now += timedelta(minutes=10)
    assert await mapper.run_once(acme.now) == 1

    [orphan] = await acme.callbacks()
    assert orphan.state is CallbackState.ORPHAN
    assert orphan.next_check_at is None
    assert orphan.error is not None and "never-sent" in orphan.error
    assert await mapper.run_once(acme.now + timedelta(hours=1)) == 0


async def test_an_orphan_is_looked_at_less_often_the_longer_it_waits(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    await acme.callback(native("not-yet", "delivered"))
    looks = []
    now = acme.now
    while True:
        await mapper.run_once(now)
        [orphan] = await acme.callbacks()
        if orphan.next_check_at is None:
            break
        looks.append((orphan.next_check_at - acme.now).total_seconds())
        now = orphan.next_check_at

    assert looks[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert looks[-2:] == [544, 600]  # every minute at most, the last at ten minutes
    assert len(looks) < 20


async def test_a_callback_that_cannot_be_applied_does_not_hold_up_the_others(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    message_id = await acme.sent("+4915112340042", "P-1")
    # A NUL in a key: PostgreSQL refuses it in a query, so applying this batch fails there.
    await acme.callback(b'{"id": "P\\u0000-2", "status": "delivered"}')
    await acme.callback(native("P-1", "delivered"))

    await mapper.run_once(acme.now)

    assert (await acme.message(message_id)).status == "delivered"
    states = {c.state for c in await acme.callbacks()}
    assert CallbackState.RECEIVED not in states
    assert CallbackState.MAPPED in states


async def test_a_pending_report_makes_a_sending_message_sent_with_its_deadline(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, {**NATIVE, "message_id": "$.ref", "match": "message_id"})
    [message_id] = await acme.queue("+4915112340042")
    await acme.claim()
    await acme.callback({"ref": message_id, "status": "sent"})

    await mapper.run_once(acme.now)

    sent = await acme.message(message_id)
    assert sent.status == "sent"
    assert sent.next_attempt_at == acme.now + timedelta(hours=72)
    # The send response recorded afterwards keeps the message sent.
    await acme.record_sent(message_id, "P-9")
    assert (await acme.message(message_id)).status == "sent"


async def test_our_id_echoed_by_another_connector_changes_nothing(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    echo = {**NATIVE, "message_id": "$.ref", "match": "message_id"}
    acme = await provider(database, box, echo)
    other = await provider(database, box, echo, name="other")
    message_id = await acme.sent("+4915112340042", "P-1")
    await other.callback({"ref": message_id, "status": "delivered"})

    await mapper.run_once(acme.now)

    assert (await acme.message(message_id)).status == "sent"
    [orphan] = await other.callbacks()
    assert orphan.state is CallbackState.ORPHAN and orphan.next_check_at is None


async def test_sinch_batch_report_is_matched_by_batch_id_and_recipient(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    sinch = await provider(database, box, SINCH_BATCH)
    first, second = await sinch.queue("+447911123456", "+447911123457")
    await sinch.claim()
    await sinch.record_sent(first, "BATCH-1", to="+447911123456")
    await sinch.record_sent(second, "BATCH-1", to="+447911123457")
    await sinch.callback(
        {
            "type": "delivery_report_sms",
            "batch_id": "BATCH-1",
            "statuses": [
                {"code": 0, "status": "Delivered", "count": 1, "recipients": ["447911123456"]},
                {"code": 402, "status": "Failed", "count": 1, "recipients": ["447911123457"]},
            ],
        }
    )

    await mapper.run_once(sinch.now)

    assert (await sinch.message(first)).status == "delivered"
    failed = await sinch.message(second)
    assert failed.status == "undelivered"
    assert failed.failure_reason == "error code 402"


async def test_a_shared_id_without_a_recipient_matches_no_message(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    sinch = await provider(database, box, NATIVE)
    first, second = await sinch.queue("+447911123456", "+447911123457")
    await sinch.claim()
    await sinch.record_sent(first, "BATCH-1", to="+447911123456")
    await sinch.record_sent(second, "BATCH-1", to="+447911123457")
    await sinch.callback({"id": "BATCH-1", "status": "delivered"})

    await mapper.run_once(sinch.now)

    assert [(await sinch.message(m)).status for m in (first, second)] == ["sent", "sent"]
    [orphan] = await sinch.callbacks()
    assert orphan.state is CallbackState.ORPHAN


async def test_msg91_request_id_and_number_in_a_form_field(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    msg91 = await provider(database, box, MSG91)
    first, second = await msg91.queue("+919812345678", "+919812345679")
    await msg91.claim()
    await msg91.record_sent(first, "REQ-7", to="+919812345678")
    await msg91.record_sent(second, "REQ-7", to="+919812345679")
    data = [
        {
            "requestId": "REQ-7",
            "senderId": "SMSIND",
            "report": [
                {
                    "date": "2030-01-01 12:00:05",
                    "number": "919812345678",
                    "status": "1",
                    "desc": "DELIVERED",
                },
                {
                    "date": "2030-01-01 12:00:07",
                    "number": "919812345679",
                    "status": "9",
                    "desc": "NDNC",
                },
            ],
        }
    ]
    await msg91.callback(
        urlencode({"data": json.dumps(data)}).encode(), "application/x-www-form-urlencoded"
    )

    await mapper.run_once(msg91.now)

    assert (await msg91.message(first)).status == "delivered"
    ndnc = await msg91.message(second)
    assert (ndnc.status, ndnc.failure_reason) == ("undelivered", "NDNC")


# ---------------------------------------------------------------- lifecycle


async def test_duplicates_are_recorded_once_and_late_reports_change_nothing(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    message_id = await acme.sent("+4915112340042", "P-1")
    await acme.callback(native("P-1", "delivered"))
    await acme.callback(native("P-1", "DELIVERED"))  # the same status, another spelling
    await mapper.run_once(acme.now)
    await acme.callback(native("P-1", "delivered"))
    await acme.callback(native("P-1", "sent"))
    await acme.callback(native("P-1", "undelivered", reason="too late"))
    await mapper.run_once(acme.now)

    record = await acme.message(message_id)
    assert record.status == "delivered"
    assert record.failure_reason is None
    assert reports(record) == [
        ("delivered", "delivered"),
        ("sent", "pending"),
        ("undelivered", "failed"),
    ]
    assert statuses(record) == ["sent", "delivered"]
    assert {c.state for c in await acme.callbacks()} == {CallbackState.MAPPED}


async def test_a_report_keeps_what_the_provider_said(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    message_id = await acme.sent("+4915112340042", "P-1")
    await acme.callback(
        native("P-1", "undelivered", reason="absent_subscriber", error_code="30003")
    )

    await mapper.run_once(acme.now)

    record = await acme.message(message_id)
    [report] = [e for e in record.events if e.kind == "report"]
    [callback] = await acme.callbacks()
    assert report.detail == {
        "raw_status": "undelivered",
        "outcome": "failed",
        "provider_id": "P-1",
        "recipient": "+4915112340042",
        "reason": "absent_subscriber",
        "error_code": "30003",
        "callback_id": callback.id,
    }
    assert record.failure_reason == "absent_subscriber"
    [change] = [e for e in record.events if e.kind == "status" and e.status == "undelivered"]
    assert change.detail is not None and change.detail["from"] == "sent"


async def test_the_sweep_marks_sent_messages_unconfirmed_only_after_their_window(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, {**NATIVE, "window_hours": 2})
    message_id = await acme.sent("+4915112340042", "P-1")

    await mapper.run_once(acme.now + timedelta(hours=1, minutes=59))
    assert (await acme.message(message_id)).status == "sent"

    await mapper.run_once(acme.now + timedelta(hours=2))
    record = await acme.message(message_id)
    assert record.status == "unconfirmed"
    assert statuses(record)[-1] == "unconfirmed"


async def test_a_late_final_report_settles_an_unconfirmed_message(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, {**NATIVE, "window_hours": 1})
    message_id = await acme.sent("+4915112340042", "P-1")
    acme.now += timedelta(hours=2)
    await mapper.run_once(acme.now)
    await acme.callback(native("P-1", "delivered"))

    await mapper.run_once(acme.now)

    record = await acme.message(message_id)
    assert record.status == "delivered"
    assert statuses(record) == ["sent", "unconfirmed", "delivered"]


async def test_callbacks_of_a_connector_without_a_mapping_are_kept_as_errors(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    blind = await provider(database, box, None)
    message_id = await blind.sent("+4915112340042", "P-1")
    await blind.callback(native("P-1", "delivered"))

    await mapper.run_once(blind.now + timedelta(days=100))

    assert (await blind.message(message_id)).status == "sent"
    [stored] = await blind.callbacks()
    assert stored.state is CallbackState.ERROR
    assert stored.error is not None and "no `delivery` mapping" in stored.error


async def test_a_callback_without_any_report_is_an_error(
    database: Database, box: SecretBox, mapper: DeliveryMapper
) -> None:
    acme = await provider(database, box, NATIVE)
    await acme.callback({"hello": "world"})

    await mapper.run_once(acme.now)

    [stored] = await acme.callbacks()
    assert stored.state is CallbackState.ERROR
    assert stored.error is not None and "delivery.message_id" in stored.error


async def test_many_callbacks_are_mapped_in_batches(
    database: Database, box: SecretBox, settings: Settings
) -> None:
    acme = await provider(database, box, NATIVE)
    numbers = [f"+49151123{n:05d}" for n in range(30)]
    ids = await acme.queue(*numbers)
    await acme.claim()
    for n, message_id in enumerate(ids):
        await acme.record_sent(message_id, f"P-{n}", to=numbers[n])
    for n in range(30):
        await acme.callback(native(f"P-{n}", "delivered"))
    mapper = DeliveryMapper(database, box, settings, batch_size=7)

    assert await mapper.run_once(acme.now) == 30

    assert {(await acme.message(m)).status for m in ids} == {"delivered"}
