"""DLR intake end to end: a real server, callbacks over HTTP, results read through the API.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture). Nothing waits on a
clock: tests poll the API until the state they assert is visible; the `unconfirmed` sweep
is driven by running the delivery mapper with an injected `now`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from gateway import Gateway, running_gateway
from smsrelay.dispatch.delivery_mapper import DeliveryMapper
from smsrelay.sandbox import sandbox_connector_yaml
from smsrelay.store.delivery_reports import count_callbacks
from smsrelay.store.timestamps import utc_now

# Numbers the sandbox treats specially (see the sandbox README).
NO_REPORT = "+4915112340002"
REPORT_BEFORE_ANSWER = "+4915112340777"


# ---------------------------------------------------------------- helpers


def sandbox_connector(gw: Gateway, name: str, **changes: Any) -> dict[str, Any]:
    """The shipped sandbox connector under another name, pointed at this server's sandbox."""
    document: dict[str, Any] = yaml.safe_load(sandbox_connector_yaml(gw.base_url + "/sandbox"))
    document["name"] = name
    document.update(changes)
    return document


async def put_connector(gw: Gateway, document: dict[str, Any], sender: str | None = None) -> str:
    """Save a connector (and a sender on it); returns its callback URL."""
    response = await gw.client.put(f"/v1/connectors/{document['name']}", json=document)
    assert response.status_code == 200, response.text
    if sender is not None:
        created = await gw.client.post(
            "/v1/senders",
            json={"name": sender, "connector": document["name"], "sender_id": "TESTER"},
        )
        assert created.status_code == 201, created.text
    url: str = response.json()["callback_url"]
    return url


async def callback_url(gw: Gateway, connector: str) -> str:
    response = await gw.client.get(f"/v1/connectors/{connector}")
    assert response.status_code == 200, response.text
    url: str = response.json()["callback_url"]
    return url


async def send(gw: Gateway, to: str, **extra: Any) -> str:
    response = await gw.client.post("/v1/messages", json={"to": to, "body": "hello", **extra})
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


def quick_reports(gw: Gateway) -> None:
    """Let the in-process sandbox call back at once instead of after half a second."""
    gw.sandbox.settings = gw.sandbox.settings.model_copy(update={"dlr_delay_seconds": 0.01})


async def delivery_reports(gw: Gateway, connector: str, **params: Any) -> list[dict[str, Any]]:
    response = await gw.client.get(
        f"/v1/connectors/{connector}/delivery-reports", params={"limit": 200, **params}
    )
    assert response.status_code == 200, response.text
    reports: list[dict[str, Any]] = response.json()["data"]
    return reports


async def wait_until_mapped(
    gw: Gateway,
    connector: str,
    count: int,
    *,
    done: frozenset[str] = frozenset({"mapped", "orphan", "error"}),
) -> list[dict[str, Any]]:
    """Poll the assistant's listing until `count` callbacks exist, each in a `done` state."""
    async with asyncio.timeout(15):
        while True:
            reports = await delivery_reports(gw, connector)
            if len(reports) >= count and all(r["state"] in done for r in reports):
                return reports
            await asyncio.sleep(0.05)


async def message(gw: Gateway, message_id: str) -> dict[str, Any]:
    response = await gw.client.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def reports_in(history: list[dict[str, Any]]) -> list[str]:
    """The raw statuses of the report events, in order."""
    return [e["detail"]["raw_status"] for e in history if e["kind"] == "report"]


def statuses_in(history: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in history if e["kind"] == "status"]


def native_report(provider_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """The sandbox's own DLR shape."""
    return {
        "id": provider_id,
        "client_ref": None,
        "to": NO_REPORT,
        "status": status,
        "reason": None,
        "error_code": None,
        "timestamp": "2030-01-01T12:00:00.000Z",
        **extra,
    }


@asynccontextmanager
async def running_provider(app: web.Application) -> AsyncIterator[str]:
    """Serve a tiny provider on 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def two_part_provider() -> web.Application:
    """A Vonage-like provider that splits every message in two parts, one id each."""
    sent = 0

    async def send_sms(request: web.Request) -> web.Response:
        nonlocal sent
        form = await request.post()
        sent += 1
        parts = [
            {"to": form["to"], "message-id": f"PART{sent}-{part}", "status": "0"} for part in (1, 2)
        ]
        return web.json_response({"message-count": "2", "messages": parts})

    app = web.Application()
    app.router.add_post("/sms/json", send_sms)
    return app


def vonage_connector(base_url: str) -> dict[str, Any]:
    return {
        "name": "twoparts",
        "request": {
            "url": f"{base_url}/sms/json",
            "body": {
                "type": "form",
                "form": {"from": "{{sender}}", "to": "{{to}}", "text": "{{body}}"},
            },
            "phone_format": "e164_digits",
        },
        "response": {"message_id": "$.messages[*]['message-id']"},
        "delivery": {
            "message_id": "messageId",
            "recipient": "msisdn",
            "status": "status",
            "error_code": "err-code",
            "delivered": ["delivered"],
            "failed": ["expired", "failed", "rejected", "undelivered"],
            "pending": ["accepted", "buffered", "unknown"],
        },
    }


def vonage_receipt(part_id: str, status: str, err_code: str = "0") -> dict[str, str]:
    return {
        "msisdn": "447911123456",
        "to": "TESTER",
        "network-code": "23410",
        "messageId": part_id,
        "price": "0.03330000",
        "status": status,
        "scts": "2403011000",
        "err-code": err_code,
        "message-timestamp": "2024-03-01 10:00:05",
    }


async def sent_message(gw: Gateway, to: str, **extra: Any) -> dict[str, Any]:
    """Send a message and wait until the provider accepted it."""
    message_id = await send(gw, to, **extra)
    return await gw.wait_for_status(message_id, {"sent", "delivered", "undelivered"})


# ---------------------------------------------------------------- matching


async def test_dlr_before_send_response_is_matched_later(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        quick_reports(gw)
        message_id = await send(gw, REPORT_BEFORE_ANSWER)

        delivered = await gw.wait_for_status(message_id, "delivered")

        assert reports_in(delivered["history"]) == ["delivered"]
        [report] = [e for e in delivered["history"] if e["kind"] == "report"]
        assert report["detail"]["provider_id"] == delivered["provider_ids"][0]
        assert report["detail"]["outcome"] == "delivered"
        assert delivered["final_at"] is not None
        # The callback came before the provider id was known: it was an orphan, then matched.
        [stored] = await wait_until_mapped(gw, "sandbox", 1)
        assert stored["state"] == "mapped"
        assert report["detail"]["callback_id"] == stored["id"]


async def test_sandbox_reports_end_delivered_and_undelivered_with_the_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        quick_reports(gw)
        ok = await send(gw, "+4915112340042")
        bad = await send(gw, "+4915112340001")
        late = await send(gw, "+4915112340003")

        await gw.wait_for_status(late, "delivered")
        # A report can beat the send response and wait as an orphan: wait until all four
        # reports (one each, two for the last number) are matched.
        await wait_until_mapped(gw, "sandbox", 4, done=frozenset({"mapped"}))
        delivered = await message(gw, ok)
        undelivered = await message(gw, bad)
        sent_then_delivered = await message(gw, late)

        assert delivered["failure_reason"] is None
        assert undelivered["failure_reason"] == "absent_subscriber"
        [failure] = [e for e in undelivered["history"] if e["kind"] == "report"]
        assert failure["detail"]["error_code"] == "30003"
        assert statuses_in(undelivered["history"])[-1] == "undelivered"
        # Both reports are kept; one that waited as an orphan is recorded when it matched.
        assert sorted(reports_in(sent_then_delivered["history"])) == ["delivered", "sent"]
        assert sent_then_delivered["status"] == "delivered"


async def test_duplicate_and_out_of_order_reports_never_move_a_message_backwards(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await callback_url(gw, "sandbox")
        sent = await sent_message(gw, NO_REPORT)
        provider_id = sent["provider_ids"][0]

        for status in ("delivered", "delivered", "sent"):
            answer = await gw.client.post(url, json=native_report(provider_id, status))
            assert answer.status_code == 200
            assert answer.json() == {"status": "received"}
        await wait_until_mapped(gw, "sandbox", 3)

        final = await message(gw, sent["id"])
        assert final["status"] == "delivered"
        # The duplicate is recorded once; the late `sent` is kept but changes nothing.
        assert reports_in(final["history"]) == ["delivered", "sent"]
        assert statuses_in(final["history"]) == ["queued", "sent", "delivered"]


async def test_a_message_in_two_parts_is_delivered_only_when_both_parts_are(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        running_provider(two_part_provider()) as provider,
        running_gateway(database_url, tmp_path) as gw,
    ):
        url = await put_connector(gw, vonage_connector(provider), sender="parts")
        sent = await sent_message(gw, "+447911123456", sender="parts")
        first, second = sorted(sent["provider_ids"])

        await gw.client.post(url, json=vonage_receipt(first, "delivered"))
        await wait_until_mapped(gw, "twoparts", 1)
        assert (await message(gw, sent["id"]))["status"] == "sent"

        await gw.client.post(url, json=vonage_receipt(second, "delivered"))
        await wait_until_mapped(gw, "twoparts", 2)
        delivered = await message(gw, sent["id"])
        assert delivered["status"] == "delivered"
        parts = [e["detail"]["provider_id"] for e in delivered["history"] if e["kind"] == "report"]
        assert parts == [first, second]


async def test_one_failed_part_makes_the_message_undelivered(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        running_provider(two_part_provider()) as provider,
        running_gateway(database_url, tmp_path) as gw,
    ):
        url = await put_connector(gw, vonage_connector(provider), sender="parts")
        sent = await sent_message(gw, "+447911123456", sender="parts")
        first, second = sorted(sent["provider_ids"])

        await gw.client.post(url, json=vonage_receipt(first, "expired", "1"))
        await wait_until_mapped(gw, "twoparts", 1)
        await gw.client.post(url, json=vonage_receipt(second, "delivered"))
        await wait_until_mapped(gw, "twoparts", 2)

        final = await message(gw, sent["id"])
        assert final["status"] == "undelivered"
        assert final["failure_reason"] == "error code 1"


async def test_unmatched_reports_are_answered_200_and_listed_as_orphans(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await callback_url(gw, "sandbox")

        answer = await gw.client.post(url, json=native_report("no-such-id", "delivered"))

        assert answer.status_code == 200
        assert answer.json() == {"status": "received"}
        [orphan] = await wait_until_mapped(gw, "sandbox", 1)
        assert orphan["state"] == "orphan"
        assert "no-such-id" in orphan["error"]
        assert orphan["document"]["id"] == "no-such-id"
        assert {"path": "$.status", "value": "delivered"} in orphan["fields"]
        listed = await delivery_reports(gw, "sandbox", state="orphan")
        assert [r["id"] for r in listed] == [orphan["id"]]


async def test_an_unreadable_callback_is_kept_with_the_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await callback_url(gw, "sandbox")

        answer = await gw.client.post(
            url, content=b"{not json", headers={"Content-Type": "application/json"}
        )

        assert answer.status_code == 200
        [stored] = await wait_until_mapped(gw, "sandbox", 1)
        assert stored["state"] == "error"
        assert "not valid JSON" in stored["error"]
        assert stored["body"] == "{not json"


# ---------------------------------------------------------------- refusals


async def test_unknown_token_is_404(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        answer = await gw.client.post("/dlr/not-a-token", json=native_report("x", "delivered"))
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert (await gw.client.get("/dlr/not-a-token?id=x")).status_code == 404


async def test_oversized_body_is_413_and_nothing_is_stored(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path, dlr_max_bytes=1024) as gw:
        url = await callback_url(gw, "sandbox")
        big = json.dumps(native_report("x", "delivered", padding="x" * 2000)).encode()

        declared = await gw.client.post(
            url, content=big, headers={"Content-Type": "application/json"}
        )

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 256):
                yield big[start : start + 256]

        # Without Content-Length the body is counted as it streams in.
        streamed = await gw.client.post(
            url, content=chunks(), headers={"Content-Type": "application/json"}
        )
        small = await gw.client.post(url, json=native_report("x", "delivered"))

        assert declared.status_code == 413
        assert streamed.status_code == 413
        assert small.status_code == 200
        stored = await wait_until_mapped(gw, "sandbox", 1)
        assert len(stored) == 1 and len(stored[0]["body"]) < 1024


def twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    signed = url + "".join(key + value for key, value in sorted(form.items()))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


async def test_bad_hmac_is_401_and_nothing_is_stored(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        document = {
            "name": "signed",
            "request": {
                "url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
                "body": {"type": "form", "form": {"To": "{{to}}", "Body": "{{body}}"}},
            },
            "response": {"message_id": "$.sid"},
            "delivery": {
                "message_id": "MessageSid",
                "status": "MessageStatus",
                "verify": {
                    "type": "hmac",
                    "header": "X-Twilio-Signature",
                    "algorithm": "sha1",
                    "secret": "{{secret.auth_token}}",
                    "over": "url+params",
                    "encoding": "base64",
                },
            },
            "secrets": {"auth_token": "twilio-auth-token"},
        }
        url = await put_connector(gw, document)
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}

        forged = await gw.client.post(
            url, data=form, headers={"X-Twilio-Signature": twilio_signature("wrong", url, form)}
        )
        missing = await gw.client.post(url, data=form)
        genuine = await gw.client.post(
            url,
            data=form,
            headers={"X-Twilio-Signature": twilio_signature("twilio-auth-token", url, form)},
        )

        assert forged.status_code == 401
        assert "X-Twilio-Signature" in forged.json()["detail"]
        assert missing.status_code == 401
        assert genuine.status_code == 200
        [stored] = await wait_until_mapped(gw, "signed", 1)
        # Signatures are not kept with the stored callback.
        assert stored["headers"]["x-twilio-signature"] == "***"


# ---------------------------------------------------------------- unconfirmed


async def test_a_sent_message_without_a_final_report_ends_unconfirmed(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        short = sandbox_connector(gw, "short-window")
        short["delivery"]["window_hours"] = 0.0003  # about a second
        await put_connector(gw, short, sender="short")
        sent = await sent_message(gw, NO_REPORT, sender="short")
        assert sent["status"] == "sent"

        runtime = gw.runtime
        mapper = DeliveryMapper(runtime.database, runtime.secret_box, runtime.settings)
        await mapper.run_once(utc_now() + timedelta(hours=1))

        final = await message(gw, sent["id"])
        assert final["status"] == "unconfirmed"
        assert final["final_at"] is not None
        [change] = [e for e in final["history"] if e["status"] == "unconfirmed"]
        assert change["kind"] == "status"
        assert change["detail"]["reason"] == "no final delivery report"


async def test_messages_of_a_connector_without_delivery_mapping_stay_sent(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        unmapped = sandbox_connector(gw, "no-mapping")
        del unmapped["delivery"]
        await put_connector(gw, unmapped, sender="blind")
        sent = await sent_message(gw, NO_REPORT, sender="blind")

        runtime = gw.runtime
        mapper = DeliveryMapper(runtime.database, runtime.secret_box, runtime.settings)
        await mapper.run_once(utc_now() + timedelta(days=60))

        assert (await message(gw, sent["id"]))["status"] == "sent"


# ---------------------------------------------------------------- mapping assistant


async def test_mapping_suggestion_for_a_twilio_form_proposes_sid_and_status(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        sample = {
            "method": "POST",
            "content_type": "application/x-www-form-urlencoded",
            "body": "SmsSid=SM5ef8&SmsStatus=undelivered&MessageStatus=undelivered"
            "&To=%2B15558675310&MessageSid=SM5ef8&AccountSid=AC1&From=%2B15017122661"
            "&ApiVersion=2010-04-01&ErrorCode=30003",
        }

        answer = await gw.client.post(
            "/v1/connectors/sandbox/delivery-mapping/suggest", json=sample
        )

        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["suggestion"]["message_id"] == "$.MessageSid"
        assert result["suggestion"]["status"] == "$.MessageStatus"
        assert "undelivered" in result["suggestion"]["failed"]
        assert {"path": "$.ErrorCode", "value": "30003"} in result["fields"]
        [report] = result["reports"]
        assert (report["message_id"], report["outcome"]) == ("SM5ef8", "failed")


async def test_mapping_suggestion_from_a_stored_callback(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        url = await callback_url(gw, "sandbox")
        await gw.client.get(url, params={"msgid": "abc", "state": "DELIVRD", "ref": "x"})
        [stored] = await wait_until_mapped(gw, "sandbox", 1)

        answer = await gw.client.post(
            "/v1/connectors/sandbox/delivery-mapping/suggest", json={"callback_id": stored["id"]}
        )
        unknown = await gw.client.post(
            "/v1/connectors/sandbox/delivery-mapping/suggest", json={"callback_id": 999_999}
        )
        unauthenticated = await gw.client.post(
            "/v1/connectors/sandbox/delivery-mapping/suggest",
            json={"callback_id": stored["id"]},
            headers={"Authorization": ""},
        )

        assert answer.status_code == 200, answer.text
        assert answer.json()["document"] == {"msgid": "abc", "state": "DELIVRD", "ref": "x"}
        assert answer.json()["suggestion"]["message_id"] == "$.msgid"
        assert unknown.status_code == 404
        assert unauthenticated.status_code == 401


# ---------------------------------------------------------------- load


async def test_burst_of_callbacks_loses_none(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        # No delivery mapping: the callbacks are only stored, which is what this counts.
        burst = sandbox_connector(gw, "burst")
        del burst["delivery"]
        url = await put_connector(gw, burst)
        total = 2000
        answered = 0
        limit = asyncio.Semaphore(64)

        async def fire(session: aiohttp.ClientSession, n: int) -> None:
            nonlocal answered
            async with limit, session.post(url, json=native_report(f"burst-{n}", "delivered")) as r:
                await r.read()
                if r.status == 200:
                    answered += 1

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            await asyncio.gather(*(fire(session, n) for n in range(total)))

        stored = await count_callbacks(gw.runtime.database)
        assert answered == total
        assert stored == answered
