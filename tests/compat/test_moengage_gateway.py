"""MoEngage's custom connector against a real server, with MoEngage's own request bodies.

The bodies are the ones MoEngage's setup guides show for a custom connector: JSON or form,
`to` mapped to Moesms_destination and `message` to Moesms_message (MoEngage substitutes
them; here already substituted). Delivery reports come back to a local receiver in the
`moengage` format. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compat.receiver import Receiver, receiving
from gateway import Gateway, running_gateway

MOENGAGE_SEND = "/api/v2/sms/moengage/send"


async def _moengage_setup(gw: Gateway, rx: Receiver) -> str:
    """A TXTSMS sender on the sandbox and a moengage webhook to the receiver; its id."""
    sender = {"name": "moe-otp", "connector": "sandbox", "sender_id": "TXTSMS"}
    assert (await gw.client.post("/v1/senders", json=sender)).status_code == 201
    response = await gw.client.post(
        "/v1/webhooks",
        # No events given: a moengage webhook gets final statuses only by default.
        json={"url": rx.url, "format": "moengage"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["events"] == ["delivered", "undelivered", "failed"]
    webhook_id: str = response.json()["id"]
    return webhook_id


def _moengage_headers(gw: Gateway, content_type: str) -> dict[str, str]:
    # What MoEngage's form is told to send: Accept, Authorization, Content-Type.
    return {
        "Accept": "application/json",
        "Authorization": f"Bearer {gw.api_key}",
        "Content-Type": content_type,
    }


async def test_moengage_json_request_is_sent_and_reported_delivered(
    database_url: str, tmp_path: Path
) -> None:
    async with receiving() as rx, running_gateway(database_url, tmp_path) as gw:
        webhook_id = await _moengage_setup(gw, rx)
        body: dict[str, Any] = {
            "sender": "TXTSMS",
            "to": "15005550006",  # Moesms_destination
            "message": "Your OTP is 123456",  # Moesms_message
            "service": "T",
            "webhook_id": webhook_id,
            "custom": "moe-42",
        }
        response = await gw.client.post(
            MOENGAGE_SEND, json=body, headers=_moengage_headers(gw, "application/json")
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "success" and answer["sender"] == "moe-otp"
        message_id = answer["message_id"]
        [report] = await rx.wait_for(1)
        assert report.headers["Content-Type"] == "application/json"
        assert len(report.body) < 150 * 1024
        assert report.json() == {
            "message_id": message_id,
            "status": "delivered",
            "reason": None,
            "error_code": None,
            "to": "+15005550006",
            "timestamp": report.json()["timestamp"],
            "event_id": report.headers["Smsrelay-Event-Id"],
            "custom": "moe-42",
        }
        [received] = gw.sandbox.messages(to="+15005550006")
        assert (received.body, received.sender) == ("Your OTP is 123456", "TXTSMS")


async def test_moengage_form_request_reports_a_failure_with_its_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with receiving() as rx, running_gateway(database_url, tmp_path) as gw:
        webhook_id = await _moengage_setup(gw, rx)
        form = {
            "sender": "TXTSMS",
            "to": "15005550001",  # the sandbox reports it undelivered: absent_subscriber
            "message": "Flash sale today",
            "service": "P",
            "webhook_id": webhook_id,
            "entity_id": "",  # optional fields MoEngage leaves unmapped arrive empty
            "template_id": "",
        }
        response = await gw.client.post(
            MOENGAGE_SEND,
            data=form,
            headers=_moengage_headers(gw, "application/x-www-form-urlencoded"),
        )
        assert response.status_code == 200, response.text
        message_id = response.json()["message_id"]
        [report] = await rx.wait_for(1)
        assert report.json()["message_id"] == message_id
        assert report.json()["status"] == "undelivered"
        assert report.json()["reason"] == "absent_subscriber"
        message = (await gw.client.get(f"/v1/messages/{message_id}")).json()
        # Promotional: no sender has TXTSMS as a promotional ID, but `moe-otp` carries it.
        assert message["sender_id"] == "TXTSMS"


async def test_moengage_scheduled_request_waits_in_the_configured_zone(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        response = await gw.client.post(
            MOENGAGE_SEND,
            json={"to": "15005550006", "message": "later", "time": "2099-01-01 05:30:00"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["send_at"] == "2099-01-01T05:30:00+00:00"


async def test_moengage_bad_requests_get_clear_problems(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        missing = await gw.client.post(MOENGAGE_SEND, json={"sender": "TXTSMS", "service": "T"})
        assert missing.status_code == 422
        assert missing.headers["content-type"] == "application/problem+json"
        assert {e["path"] for e in missing.json()["errors"]} == {"to", "message"}
        bad_number = await gw.client.post(MOENGAGE_SEND, json={"to": "12", "message": "x"})
        assert bad_number.status_code == 422
        assert bad_number.json()["errors"][0]["path"] == "to"
        unknown_webhook = await gw.client.post(
            MOENGAGE_SEND, json={"to": "15005550006", "message": "x", "webhook_id": "wh_nope"}
        )
        assert unknown_webhook.status_code == 422
        assert unknown_webhook.json()["errors"][0]["path"] == "webhook_id"
        not_json = await gw.client.post(
            MOENGAGE_SEND, content=b"<sms/>", headers={"Content-Type": "application/xml"}
        )
        assert not_json.status_code == 415
        anonymous = await gw.client.post(
            MOENGAGE_SEND, json={"to": "15005550006", "message": "x"}, headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401
        assert (await gw.client.get("/v1/messages")).json()["data"] == []
