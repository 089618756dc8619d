"""Send endpoints over real HTTP: the four request shapes and the outcome of each number."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from smsrelay.sandbox.settings import SandboxSettings
from smsrelay.sandbox.testing import RunningSandbox, running_sandbox

from .conftest import FAST, CallbackReceiver


async def send(
    client: aiohttp.ClientSession, base_url: str, to: str, **extra: str
) -> tuple[int, dict[str, str], dict[str, object]]:
    doc = {"to": to, "from": "TXTSMS", "body": "hi", **extra}
    async with client.post(f"{base_url}/api/messages", json=doc) as answer:
        return answer.status, dict(answer.headers), await answer.json()


async def test_a_plain_number_is_accepted_with_an_id_and_segments(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    status, _, doc = await send(client, sbx.base_url, "+15005550006", client_ref="m-1")
    assert status == 200
    assert doc["status"] == "accepted"
    assert doc["to"] == "+15005550006"
    assert doc["segments"] == 1
    assert doc["client_ref"] == "m-1"
    assert isinstance(doc["id"], str) and doc["id"]


async def test_text_and_sender_are_accepted_for_body_and_from(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    doc = {"to": "+15005550006", "sender": "ACME", "text": "x" * 161}
    async with client.post(f"{sbx.base_url}/api/messages", json=doc) as answer:
        assert answer.status == 200
        sent = await answer.json()
    assert sent["segments"] == 2
    (kept,) = sbx.sandbox.messages(to="+15005550006")
    assert (kept.sender, kept.body) == ("ACME", "x" * 161)


async def test_0400_is_rejected_permanently_with_http_400(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    status, _, doc = await send(client, sbx.base_url, "+15005550400")
    assert status == 400
    assert doc["error"] == "invalid destination"
    assert doc["field"] == "to"
    status, _, _ = await send(client, sbx.base_url, "+15005550400")
    assert status == 400  # every time, not only the first


async def test_0500_fails_twice_then_succeeds_counted_per_number(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    answers = [(await send(client, sbx.base_url, "+15005550500"))[0] for _ in range(4)]
    assert answers == [500, 500, 200, 200]
    other = [(await send(client, sbx.base_url, "+16005550500"))[0] for _ in range(3)]
    assert other == [500, 500, 200]


async def test_0429_is_rate_limited_once_with_retry_after(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    status, headers, doc = await send(client, sbx.base_url, "+15005550429")
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert doc["code"] == "rate_limited"
    status, _, _ = await send(client, sbx.base_url, "+15005550429")
    assert status == 200


async def test_deleting_messages_restarts_the_per_number_counts(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    assert (await send(client, sbx.base_url, "+15005550429"))[0] == 429
    async with client.delete(f"{sbx.base_url}/api/messages") as answer:
        assert answer.status == 200
    assert (await send(client, sbx.base_url, "+15005550429"))[0] == 429


async def test_0408_answers_late_without_holding_up_other_requests(
    client: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(FAST.model_copy(update={"timeout_seconds": 1.0})) as sbx:
        slow = asyncio.create_task(send(client, sbx.base_url, "+15005550408"))
        await sbx.sandbox.wait_until(lambda s: bool(s.messages(to="+15005550408")))
        status, _, _ = await send(client, sbx.base_url, "+15005550006")
        assert status == 200
        assert not slow.done()  # the quick one was answered while the slow one waited
        status, _, doc = await slow
        assert (status, doc["status"]) == (200, "accepted")


async def test_a_batch_answers_each_message_in_order(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    doc = {
        "from": "TXTSMS",
        "callback_url": receiver.url(),
        "messages": [
            {"to": "+15005550006", "body": "one", "client_ref": "a"},
            {"to": "+15005550400", "body": "two", "client_ref": "b"},
            {"to": "+15005550001", "body": "three", "client_ref": "c"},
        ],
    }
    async with client.post(f"{sbx.base_url}/api/messages/batch", json=doc) as answer:
        assert answer.status == 200
        result = (await answer.json())["messages"]
    assert [(m["to"], m["status"], m["client_ref"]) for m in result] == [
        ("+15005550006", "accepted", "a"),
        ("+15005550400", "rejected", "b"),
        ("+15005550001", "accepted", "c"),
    ]
    assert result[1]["id"] is None and result[1]["error"] == "invalid destination"
    callbacks = await receiver.wait_for(2)
    await sbx.sandbox.wait_idle()
    reports = {c.json["client_ref"]: c.json["status"] for c in callbacks}
    assert reports == {"a": "delivered", "c": "undelivered"}
    assert {c.json["id"] for c in callbacks} == {result[0]["id"], result[2]["id"]}


async def test_a_batch_with_a_failing_number_fails_as_a_whole(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    doc = {"messages": [{"to": "+15005550006", "body": "a"}, {"to": "+15005550500", "body": "b"}]}
    statuses = []
    for _ in range(3):
        async with client.post(f"{sbx.base_url}/api/messages/batch", json=doc) as answer:
            statuses.append(answer.status)
    assert statuses == [500, 500, 200]


async def test_twilio_shaped_send_answers_201_with_a_sid(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    form = {"To": "+15005550006", "From": "+15017122661", "Body": "hello"}
    url = f"{sbx.base_url}/api/twilio/Accounts/AC123/Messages.json"
    headers = {"Authorization": "Basic QUMxMjM6dG9rZW4="}  # Twilio clients always send auth
    async with client.post(url, data=form, headers=headers) as answer:
        assert answer.status == 201
        doc = await answer.json()
    assert doc["sid"].startswith("SM")
    assert (doc["account_sid"], doc["to"], doc["from"], doc["body"]) == (
        "AC123",
        "+15005550006",
        "+15017122661",
        "hello",
    )
    assert doc["num_segments"] == "1"


async def test_twilio_shaped_refusals_use_twilio_error_codes(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    url = f"{sbx.base_url}/api/twilio/Accounts/AC123/Messages.json"
    async with client.post(url, data={"To": "+15005550429", "From": "X", "Body": "b"}) as answer:
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "2"
        assert (await answer.json())["code"] == 20429
    async with client.post(url, data={"From": "X", "Body": "b"}) as answer:
        assert answer.status == 400
        doc = await answer.json()
    assert (doc["field"], doc["code"]) == ("To", 21211)


async def test_query_string_send_answers_ok_and_the_id(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    params = {"to": "+15005550006", "from": "TXTSMS", "text": "hi there", "ref": "r-9"}
    async with client.get(f"{sbx.base_url}/api/http/send", params=params) as answer:
        assert answer.status == 200
        text = await answer.text()
    assert text.startswith("OK ")
    kept = sbx.sandbox.message(text.removeprefix("OK "))
    assert kept is not None
    assert (kept.to, kept.body, kept.client_ref) == ("+15005550006", "hi there", "r-9")


async def test_malformed_input_gets_400_naming_the_field(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    cases = [
        ("/api/messages", {"body": "hi"}, "to"),
        ("/api/messages", {"to": "call me", "body": "hi"}, "to"),
        ("/api/messages", {"to": "+15005550006"}, "body"),
        (
            "/api/messages",
            {"to": "+15005550006", "body": "x", "callback_url": "ftp://x"},
            "callback_url",
        ),
        ("/api/messages/batch", {"messages": []}, "messages"),
        (
            "/api/messages/batch",
            {"messages": [{"to": "+15005550006", "body": "a"}, {"body": "b"}]},
            "messages[1].to",
        ),
    ]
    for path, doc, field in cases:
        async with client.post(sbx.base_url + path, json=doc) as answer:
            assert answer.status == 400, doc
            problem = await answer.json()
        assert problem["field"] == field, problem
        assert field in problem["error"]
    async with client.post(f"{sbx.base_url}/api/messages", data=b"{not json") as answer:
        assert answer.status == 400
        assert "not valid JSON" in (await answer.json())["error"]
    async with client.get(f"{sbx.base_url}/api/http/send", params={"to": "+15005550006"}) as answer:
        assert answer.status == 400
        assert (await answer.json())["field"] == "text"
    assert sbx.sandbox.messages() == []  # nothing malformed was kept


async def test_a_default_callback_url_is_used_when_the_send_names_none(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    settings = FAST.model_copy(update={"default_callback_url": receiver.url("/default")})
    async with running_sandbox(settings) as sbx:
        status, _, doc = await send(client, sbx.base_url, "+15005550006")
        assert status == 200
        (callback,) = await receiver.wait_for(1)
    assert callback.path == "/default"
    assert callback.json["id"] == doc["id"]


def test_settings_reject_a_callback_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="default_callback_url"):
        SandboxSettings(default_callback_url="file:///etc/passwd")
