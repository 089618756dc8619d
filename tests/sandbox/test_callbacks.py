"""Delivery reports arrive at the callback URL given, in the right format and order."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from smsrelay.sandbox.app import create_sandbox_app
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.testing import RunningSandbox, running_asgi_app, running_sandbox

from .conftest import FAST, CallbackReceiver, unused_port


async def send(
    client: aiohttp.ClientSession, base_url: str, to: str, callback_url: str, **extra: str
) -> dict[str, object]:
    doc = {"to": to, "from": "TXTSMS", "body": "hi", "callback_url": callback_url, **extra}
    async with client.post(f"{base_url}/api/messages", json=doc) as answer:
        assert answer.status == 200, await answer.text()
        result: dict[str, object] = await answer.json()
        return result


async def test_a_delivered_report_is_posted_as_json(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    sandbox = Sandbox(FAST, clock=lambda: moment)
    await sandbox.start()
    try:
        async with running_asgi_app(create_sandbox_app(sandbox)) as base_url:
            sent = await send(
                client, base_url, "+15005550006", receiver.url("/dlr/abc"), client_ref="m-1"
            )
            (callback,) = await receiver.wait_for(1)
    finally:
        await sandbox.close()
    assert (callback.method, callback.path, callback.content_type) == (
        "POST",
        "/dlr/abc",
        "application/json",
    )
    assert callback.json == {
        "id": sent["id"],
        "client_ref": "m-1",
        "to": "+15005550006",
        "status": "delivered",
        "reason": None,
        "error_code": None,
        "timestamp": "2024-05-01T12:00:00.123Z",
    }


async def test_0001_is_reported_undelivered_absent_subscriber(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await send(client, sbx.base_url, "+15005550001", receiver.url())
    (callback,) = await receiver.wait_for(1)
    report = callback.json
    assert (report["status"], report["reason"], report["error_code"]) == (
        "undelivered",
        "absent_subscriber",
        "30003",
    )


async def test_0009_is_reported_rejected_blacklisted(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await send(client, sbx.base_url, "+15005550009", receiver.url())
    (callback,) = await receiver.wait_for(1)
    assert (callback.json["status"], callback.json["reason"]) == ("rejected", "blacklisted")


async def test_0003_reports_sent_then_delivered(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await send(client, sbx.base_url, "+15005550003", receiver.url())
    callbacks = await receiver.wait_for(2)
    assert [c.json["status"] for c in callbacks] == ["sent", "delivered"]


async def test_0002_never_gets_a_report(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    silent = await send(client, sbx.base_url, "+15005550002", receiver.url())
    await send(client, sbx.base_url, "+15005550006", receiver.url())
    await receiver.wait_for(1)
    await sbx.sandbox.wait_idle()
    assert [c.json["to"] for c in receiver.received] == ["+15005550006"]
    kept = sbx.sandbox.message(str(silent["id"]))
    assert kept is not None and kept.status == "accepted" and kept.callbacks == []


async def test_0777_reports_before_answering_the_send(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    answered = False
    seen_before_answer: list[bool] = []
    receiver.on_request = lambda _: seen_before_answer.append(not answered)
    sent = await send(client, sbx.base_url, "+15005550777", receiver.url())
    answered = True
    # The callback was received and answered before the send answer came back.
    assert seen_before_answer == [True]
    assert receiver.received[0].json["id"] == sent["id"]
    assert receiver.received[0].json["status"] == "delivered"


async def test_a_failed_callback_is_retried_and_every_attempt_recorded(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    receiver.answer_with(500, 503)
    sent = await send(client, sbx.base_url, "+15005550006", receiver.url())
    callbacks = await receiver.wait_for(3)
    await sbx.sandbox.wait_idle()
    assert len(callbacks) == 3
    assert len({c.body for c in callbacks}) == 1  # the same report each time
    kept = sbx.sandbox.message(str(sent["id"]))
    assert kept is not None
    assert [(a.attempt, a.http_status) for a in kept.callbacks] == [(1, 500), (2, 503), (3, 200)]


async def test_an_unreachable_callback_is_given_up_after_the_attempts(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    settings = FAST.model_copy(update={"callback_attempts": 2})
    async with running_sandbox(settings) as sbx:
        dead = f"http://127.0.0.1:{unused_port()}/dlr"
        sent = await send(client, sbx.base_url, "+15005550006", dead)
        await sbx.sandbox.wait_idle()
        kept = sbx.sandbox.message(str(sent["id"]))
    assert kept is not None
    assert [(a.url, a.http_status) for a in kept.callbacks] == [(dead, None), (dead, None)]
    assert all(a.error for a in kept.callbacks)


async def test_redirects_are_not_followed(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    receiver.answer_with(302)
    sent = await send(client, sbx.base_url, "+15005550006", receiver.url("/dlr"))
    await receiver.wait_for(2)
    await sbx.sandbox.wait_idle()
    assert {c.path for c in receiver.received} == {"/dlr"}  # never /elsewhere
    kept = sbx.sandbox.message(str(sent["id"]))
    assert kept is not None
    assert [a.http_status for a in kept.callbacks] == [302, 200]


async def test_twilio_sends_get_twilio_style_form_reports(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    url = f"{sbx.base_url}/api/twilio/Accounts/AC123/Messages.json"
    form = {
        "To": "+15005550009",
        "From": "+15017122661",
        "Body": "hi",
        "StatusCallback": receiver.url(),
    }
    async with client.post(url, data=form) as answer:
        sid = (await answer.json())["sid"]
    (callback,) = await receiver.wait_for(1)
    assert callback.content_type == "application/x-www-form-urlencoded"
    report = callback.form
    assert (report["MessageSid"], report["AccountSid"], report["To"]) == (
        sid,
        "AC123",
        "+15005550009",
    )
    assert (report["MessageStatus"], report["ErrorCode"]) == ("failed", "30004")


async def test_query_string_sends_report_to_dlr_url(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    params = {"to": "+15005550006", "text": "hi", "ref": "r-1", "dlr_url": receiver.url("/q")}
    async with client.get(f"{sbx.base_url}/api/http/send", params=params) as answer:
        provider_id = (await answer.text()).removeprefix("OK ")
    (callback,) = await receiver.wait_for(1)
    assert (callback.path, callback.json["id"], callback.json["client_ref"]) == (
        "/q",
        provider_id,
        "r-1",
    )


async def test_reports_wait_for_the_configured_delay(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with running_sandbox(FAST.model_copy(update={"dlr_delay_seconds": 0.3})) as sbx:
        sent = await send(client, sbx.base_url, "+15005550006", receiver.url())
        (callback,) = await receiver.wait_for(1)
        kept = sbx.sandbox.message(str(sent["id"]))
    assert callback.json["id"] == sent["id"]
    assert kept is not None
    waited = (kept.callbacks[0].at - kept.received_at).total_seconds()
    assert waited >= 0.25  # a lower bound only; asyncio timers may round a little
