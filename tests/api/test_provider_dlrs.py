"""Nine real providers' delivery reports, end to end over HTTP (provider-notes.md §3).

Each test configures a connector the way a user would (PUT /v1/connectors/NAME) against a
tiny local stand-in for the provider's send API, which answers in that provider's
documented response shape with ids chosen here. A message is sent through it via the API,
then the provider's verbatim DLR shape is POSTed (or, for MessageBird, GET) to the
connector's callback URL, and the outcome is read back from GET /v1/messages/{id}.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import Gateway, running_gateway

# ---------------------------------------------------------------- the providers' send APIs


@dataclass
class Received:
    """One send request as the stand-in provider got it."""

    path: str
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None


class Providers:
    """Stand-ins for nine providers' send endpoints, each answering in its documented shape."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._count = 0

    def _id(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count:04d}"

    async def _record(self, request: web.Request) -> Received:
        received = Received(path=request.path, headers=dict(request.headers))
        if request.content_type == "application/x-www-form-urlencoded":
            received.form = {k: str(v) for k, v in (await request.post()).items()}
        elif request.can_read_body:
            received.json = await request.json()
        self.received.append(received)
        return received

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twilio/2010-04-01/Accounts/{sid}/Messages.json", self.twilio)
        app.router.add_post("/infobip/sms/2/text/advanced", self.infobip)
        app.router.add_post("/8x8/api/v1/subaccounts/{sub}/messages", self.eight_by_eight)
        app.router.add_post("/telnyx/v2/messages", self.telnyx)
        app.router.add_post("/messagebird/messages", self.messagebird)
        app.router.add_post("/vonage/sms/json", self.vonage)
        app.router.add_post("/sinch/xms/v1/{plan}/batches", self.sinch)
        app.router.add_post("/msg91/api/v5/flow/", self.msg91)
        app.router.add_post("/textlocal/send/", self.textlocal)
        return app

    async def twilio(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "sid": "SM" + self._id("5ef8732a3c49700934481addd5ce"),
                "account_sid": request.match_info["sid"],
                "to": sent.form["To"],
                "from": sent.form["From"],
                "body": sent.form["Body"],
                "status": "queued",
                "num_segments": "1",
                "api_version": "2010-04-01",
            },
            status=201,
        )

    async def infobip(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "bulkId": self._id("BULK-"),
                "messages": [
                    {
                        "messageId": self._id("ib-"),
                        "status": {
                            "groupId": 1,
                            "groupName": "PENDING",
                            "id": 26,
                            "name": "PENDING_ACCEPTED",
                            "description": "Message sent to next instance",
                        },
                        "to": destination["to"],
                    }
                    for message in sent.json["messages"]
                    for destination in message["destinations"]
                ],
            }
        )

    async def eight_by_eight(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "umid": "0f1c2d3e-4b5a-6978-8a9b-0c1d2e3f" + self._id("")[-4:].rjust(4, "0"),
                "clientMessageId": sent.json["clientMessageId"],
                "destination": sent.json["destination"],
                "encoding": "GSM7",
                "status": {
                    "state": "queued",
                    "detail": "received_by_server",
                    "timestamp": "2030-01-01T12:00:00.00Z",
                },
            }
        )

    async def telnyx(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "data": {
                    "record_type": "message",
                    "direction": "outbound",
                    "id": "40385f64-5717-4562-b3fc-2c963f66" + self._id("")[-4:],
                    "type": "SMS",
                    "from": {"phone_number": sent.json["from"]},
                    "to": [{"phone_number": sent.json["to"], "status": "queued"}],
                    "text": sent.json["text"],
                    "webhook_url": sent.json["webhook_url"],
                }
            }
        )

    async def messagebird(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "id": "efa6405d518d4c0c88cce11f7db7" + self._id("")[-4:],
                "direction": "mt",
                "originator": sent.json["originator"],
                "body": sent.json["body"],
                "reference": sent.json["reference"],
                "recipients": {
                    "totalCount": 1,
                    "totalSentCount": 1,
                    "items": [{"recipient": int(sent.json["recipients"][0]), "status": "sent"}],
                },
            },
            status=201,
        )

    async def vonage(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "message-count": "1",
                "messages": [
                    {
                        "to": sent.form["to"],
                        "message-id": "0A000000" + self._id("")[-4:] + "567B",
                        "status": "0",
                        "remaining-balance": "3.14159265",
                        "message-price": "0.03330000",
                        "network": "23410",
                    }
                ],
            }
        )

    async def sinch(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "id": "01FC66621XXXXX119Z8PM" + self._id("")[-4:],
                "to": sent.json["to"],
                "from": sent.json["from"],
                "canceled": False,
                "body": sent.json["body"],
                "type": "mt_text",
                "delivery_report": sent.json["delivery_report"],
            },
            status=201,
        )

    async def msg91(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {"message": "3763646c30583735303931" + self._id("")[-4:], "type": "success"}
        )

    async def textlocal(self, request: web.Request) -> web.Response:
        sent = await self._record(request)
        return web.json_response(
            {
                "balance": 1162,
                "batch_id": 123456789,
                "cost": 1,
                "num_messages": 1,
                "message": {"num_parts": 1, "sender": sent.form["sender"]},
                "receipt_url": sent.form["receipt_url"],
                "custom": sent.form["custom"],
                "messages": [{"id": self._id("1151346"), "recipient": int(sent.form["numbers"])}],
                "status": "success",
            }
        )


@asynccontextmanager
async def providers_and_gateway(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Providers, str, Gateway]]:
    """The stand-in providers on 127.0.0.1 (yields them, their base URL) and a gateway."""
    providers = Providers()
    runner = web.AppRunner(providers.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with running_gateway(database_url, tmp_path) as gw:
            yield providers, f"http://{host}:{port}", gw
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- the API side


async def add_connector(gw: Gateway, document: dict[str, Any]) -> str:
    """Save the connector and a sender named after it; returns its callback URL."""
    name = document["name"]
    saved = await gw.client.put(f"/v1/connectors/{name}", json=document)
    assert saved.status_code == 200, saved.text
    sender = await gw.client.post(
        "/v1/senders", json={"name": name, "connector": name, "sender_id": "ACME"}
    )
    assert sender.status_code == 201, sender.text
    url: str = saved.json()["callback_url"]
    return url


async def send(gw: Gateway, sender: str, *numbers: str) -> list[dict[str, Any]]:
    """Send to each number through `sender` in one batch; return them once sent."""
    accepted = await gw.client.post(
        "/v1/messages/batch",
        json={
            "messages": [{"to": n, "body": "Your code is 4711", "sender": sender} for n in numbers]
        },
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["rejected"] == []
    ids = [a["id"] for a in accepted.json()["accepted"]]
    return [
        await gw.wait_for_status(i, {"sent", "delivered", "undelivered", "failed"}) for i in ids
    ]


async def settled(gw: Gateway, message_id: str, status: str) -> dict[str, Any]:
    """The message once it is `status` and every callback of its connector is mapped."""
    message = await gw.wait_for_status(message_id, status)
    async with asyncio.timeout(15):
        while True:
            listed = await gw.client.get(
                f"/v1/connectors/{message['connector']}/delivery-reports", params={"limit": 200}
            )
            if all(r["state"] == "mapped" for r in listed.json()["data"]):
                break
            await asyncio.sleep(0.05)
    answer = await gw.client.get(f"/v1/messages/{message_id}")
    found: dict[str, Any] = answer.json()
    return found


def reports(message: dict[str, Any]) -> list[str]:
    return [e["detail"]["raw_status"] for e in message["history"] if e["kind"] == "report"]


async def post_json(gw: Gateway, url: str, document: Any, **headers: str) -> None:
    answer = await gw.client.post(url, json=document, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "received"}


# ---------------------------------------------------------------- Twilio


def twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    signed = url + "".join(key + value for key, value in sorted(form.items()))
    return base64.b64encode(
        hmac.new(auth_token.encode(), signed.encode(), "sha1").digest()
    ).decode()


async def test_twilio_signed_form_callbacks(database_url: str, tmp_path: Path) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "twilio",
                "request": {
                    "url": base
                    + "/twilio/2010-04-01/Accounts/{{secret.account_sid}}/Messages.json",
                    "auth": {
                        "type": "basic",
                        "username": "{{secret.account_sid}}",
                        "password": "{{secret.auth_token}}",
                    },
                    "body": {
                        "form": {
                            "To": "{{to}}",
                            "From": "{{sender}}",
                            "Body": "{{body}}",
                            "StatusCallback": "{{callback_url}}",
                        }
                    },
                },
                "response": {"success_status": [201], "message_id": "$.sid"},
                "delivery": {
                    "message_id": "MessageSid",
                    "recipient": "To",
                    "status": "MessageStatus",
                    "error_code": "ErrorCode",
                    "delivered": ["delivered"],
                    "failed": ["failed", "undelivered", "canceled"],
                    "pending": ["queued", "sending", "sent", "accepted", "scheduled"],
                    "verify": {
                        "type": "hmac",
                        "header": "X-Twilio-Signature",
                        "algorithm": "sha1",
                        "secret": "{{secret.auth_token}}",
                        "over": "url+params",
                        "encoding": "base64",
                    },
                },
                "secrets": {"account_sid": "AC1234", "auth_token": "twilio-auth-token"},
            },
        )
        [message] = await send(gw, "twilio", "+14155550143")
        [request] = providers.received
        assert request.form["StatusCallback"] == url
        sid = message["provider_ids"][0]

        for status, extra in (("sent", {}), ("undelivered", {"ErrorCode": "30003"})):
            form = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": "AC1234",
                "From": "+15017122661",
                "To": "+14155550143",
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": "2010-04-01",
                **extra,
            }
            signature = twilio_signature("twilio-auth-token", url, form)
            answer = await gw.client.post(url, data=form, headers={"X-Twilio-Signature": signature})
            assert answer.status_code == 200, answer.text

        final = await settled(gw, message["id"], "undelivered")
        assert final["failure_reason"] == "error code 30003"
        assert reports(final) == ["sent", "undelivered"]


# ---------------------------------------------------------------- Infobip


def infobip_result(
    message_id: str, to: str, group: str, name: str, description: str
) -> dict[str, Any]:
    return {
        "bulkId": "BULK-1",
        "messageId": message_id,
        "to": to,
        "sentAt": "2030-01-01T12:00:00.000+0000",
        "doneAt": "2030-01-01T12:00:05.000+0000",
        "smsCount": 1,
        "mccMnc": "22801",
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": {
            "groupId": 3,
            "groupName": group,
            "id": 5,
            "name": name,
            "description": description,
        },
        "error": {
            "groupId": 0,
            "groupName": "OK",
            "id": 0,
            "name": "NO_ERROR",
            "description": "No Error",
            "permanent": False,
        },
    }


async def test_infobip_results_array_reports_several_messages(
    database_url: str, tmp_path: Path
) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (_, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "infobip",
                "request": {
                    "url": base + "/infobip/sms/2/text/advanced",
                    "headers": {"Authorization": "App {{secret.api_key}}"},
                    "body": {
                        "json": {
                            "messages": [
                                {
                                    "destinations": [{"to": "{{to}}"}],
                                    "from": "{{sender}}",
                                    "text": "{{body}}",
                                    "notifyUrl": "{{callback_url}}",
                                    "notifyContentType": "application/json",
                                    "callbackData": "{{message_id}}",
                                }
                            ]
                        }
                    },
                    "phone_format": "e164_digits",
                },
                "response": {"message_id": "$.messages[*].messageId"},
                "delivery": {
                    "reports": "$.results[*]",
                    "message_id": "messageId",
                    "recipient": "to",
                    "status": "status.name",
                    "reason": "status.description",
                    "error_code": "error.id",
                    "delivered": ["DELIVERED_TO_HANDSET"],
                    "pending": ["DELIVERED_TO_OPERATOR", "re:^PENDING"],
                    "failed": ["re:^(UNDELIVERABLE|EXPIRED|REJECTED)"],
                },
                "secrets": {"api_key": "ib-k3y"},
            },
        )
        first, second = await send(gw, "infobip", "+41793026727", "+41793026728")

        await post_json(
            gw,
            url,
            {
                "results": [
                    infobip_result(
                        first["provider_ids"][0],
                        "41793026727",
                        "DELIVERED",
                        "DELIVERED_TO_OPERATOR",
                        "Message delivered to operator",
                    ),
                    infobip_result(
                        second["provider_ids"][0],
                        "41793026728",
                        "UNDELIVERABLE",
                        "UNDELIVERABLE_NOT_DELIVERED",
                        "Message sent not delivered",
                    ),
                ]
            },
        )
        undelivered = await settled(gw, second["id"], "undelivered")
        # Delivered to the operator is not delivered to the handset: still pending.
        assert (await gw.wait_for_status(first["id"], "sent"))["status"] == "sent"
        await post_json(
            gw,
            url,
            {
                "results": [
                    infobip_result(
                        first["provider_ids"][0],
                        "41793026727",
                        "DELIVERED",
                        "DELIVERED_TO_HANDSET",
                        "Message delivered to handset",
                    ),
                ]
            },
        )

        delivered = await settled(gw, first["id"], "delivered")
        assert reports(delivered) == ["DELIVERED_TO_OPERATOR", "DELIVERED_TO_HANDSET"]
        assert undelivered["failure_reason"] == "Message sent not delivered"


# ---------------------------------------------------------------- 8x8


async def test_8x8_nested_json_with_a_static_authorization_header(
    database_url: str, tmp_path: Path
) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "acme-8x8",
                "request": {
                    "url": base + "/8x8/api/v1/subaccounts/{{secret.subaccount}}/messages",
                    "headers": {"Authorization": "Bearer {{secret.api_key}}"},
                    "body": {
                        "json": {
                            "source": "{{sender}}",
                            "destination": "{{to}}",
                            "text": "{{body}}",
                            "clientMessageId": "{{message_id}}",
                            "encoding": "AUTO",
                        }
                    },
                },
                "response": {"message_id": "$.umid"},
                "delivery": {
                    "message_id": "$.payload.umid",
                    "recipient": "$.payload.msisdn",
                    "status": "$.payload.status.state",
                    "reason": "$.payload.status.detail",
                    "timestamp": "$.payload.status.timestamp",
                    "delivered": ["delivered"],
                    "failed": ["rejected", "undelivered"],
                    "pending": ["queued", "sent"],
                    "verify": {
                        "type": "header",
                        "name": "Authorization",
                        "value": "Bearer {{secret.dlr_token}}",
                    },
                },
                "secrets": {"subaccount": "acme_hq", "api_key": "k3y", "dlr_token": "dlr-s3cret"},
            },
        )
        [message] = await send(gw, "acme-8x8", "+6598765432")
        assert providers.received[0].json["clientMessageId"] == message["id"]
        report = {
            "namespace": "SMS",
            "eventType": "outbound_message_status_changed",
            "description": "Outbound message status changed",
            "payload": {
                "umid": message["provider_ids"][0],
                "batchId": "b1a2c3d4-0000-0000-0000-000000000001",
                "clientMessageId": message["id"],
                "subAccountId": "acme_hq",
                "country": "SG",
                "msisdn": "+6598765432",
                "status": {
                    "state": "delivered",
                    "detail": "delivered_to_recipient",
                    "timestamp": "2030-01-01T12:00:05.00Z",
                },
                "price": {"total": 0.0075, "perSms": 0.0075, "currency": "EUR"},
                "smsCount": 1,
            },
        }

        refused = await gw.client.post(url, json=report, headers={"Authorization": "Bearer nope"})
        await post_json(gw, url, report, Authorization="Bearer dlr-s3cret")

        assert refused.status_code == 401
        delivered = await settled(gw, message["id"], "delivered")
        [event] = [e for e in delivered["history"] if e["kind"] == "report"]
        assert event["detail"]["reason"] == "delivered_to_recipient"
        assert event["detail"]["timestamp"] == "2030-01-01T12:00:05.00Z"


# ---------------------------------------------------------------- Telnyx


async def test_telnyx_data_payload_with_errors(database_url: str, tmp_path: Path) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "telnyx",
                "request": {
                    "url": base + "/telnyx/v2/messages",
                    "auth": {"type": "bearer", "token": "{{secret.api_key}}"},
                    "body": {
                        "json": {
                            "from": "+18445550001",
                            "to": "{{to}}",
                            "text": "{{body}}",
                            "webhook_url": "{{callback_url}}",
                        }
                    },
                },
                "response": {"message_id": "$.data.id"},
                "delivery": {
                    "message_id": "data.payload.id",
                    "recipient": "data.payload.to[0].phone_number",
                    "status": "data.payload.to[0].status",
                    "error_code": "data.payload.errors[0].code",
                    "reason": "data.payload.errors[0].title",
                    "delivered": ["delivered"],
                    "failed": ["sending_failed", "delivery_failed", "expired"],
                    "pending": ["queued", "sending", "sent", "delivery_unconfirmed"],
                },
                "secrets": {"api_key": "KEY0123"},
            },
        )
        [message] = await send(gw, "telnyx", "+14155552671")
        assert providers.received[0].json["webhook_url"] == url

        def event(event_type: str, status: str, errors: list[dict[str, str]]) -> dict[str, Any]:
            return {
                "data": {
                    "event_type": event_type,
                    "id": "86f58db9-0734-4645-b7e8-4d3a3b2d6e71",
                    "occurred_at": "2030-01-01T12:00:05.000+00:00",
                    "payload": {
                        "id": message["provider_ids"][0],
                        "record_type": "message",
                        "direction": "outbound",
                        "type": "SMS",
                        "from": {"phone_number": "+18445550001", "carrier": "Telnyx"},
                        "to": [
                            {
                                "phone_number": "+14155552671",
                                "status": status,
                                "carrier": "T-Mobile USA",
                                "line_type": "Wireless",
                            }
                        ],
                        "errors": errors,
                    },
                    "record_type": "event",
                },
                "meta": {"attempt": 1, "delivered_to": url},
            }

        await post_json(gw, url, event("message.sent", "sent", []))
        await post_json(
            gw,
            url,
            event(
                "message.finalized",
                "delivery_failed",
                [{"code": "40008", "title": "Undeliverable", "detail": "carrier rejected"}],
            ),
        )

        final = await settled(gw, message["id"], "undelivered")
        assert final["failure_reason"] == "Undeliverable"
        assert reports(final) == ["sent", "delivery_failed"]
        [failure] = [e for e in final["history"] if e["kind"] == "report"][1:]
        assert failure["detail"]["error_code"] == "40008"


# ---------------------------------------------------------------- MessageBird


async def test_messagebird_get_query_string(database_url: str, tmp_path: Path) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (_, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "messagebird",
                "request": {
                    "url": base + "/messagebird/messages",
                    "headers": {"Authorization": "AccessKey {{secret.access_key}}"},
                    "body": {
                        "json": {
                            "originator": "{{sender}}",
                            "recipients": ["{{to}}"],
                            "body": "{{body}}",
                            "reference": "{{message_id}}",
                            "reportUrl": "{{callback_url}}",
                        }
                    },
                    "phone_format": "e164_digits",
                },
                "response": {"success_status": [201], "message_id": "$.id"},
                "delivery": {
                    "message_id": "id",
                    "recipient": "recipient",
                    "status": "status",
                    "reason": "statusReason",
                    "error_code": "statusErrorCode",
                    "timestamp": "statusDatetime",
                    "delivered": ["delivered"],
                    "failed": ["expired", "delivery_failed"],
                    "pending": ["scheduled", "sent", "buffered"],
                },
                "secrets": {"access_key": "live_mb"},
            },
        )
        [message] = await send(gw, "messagebird", "+31612345678")

        answer = await gw.client.get(
            url,
            params={
                "id": message["provider_ids"][0],
                "reference": message["id"],
                "recipient": "31612345678",
                "status": "delivery_failed",
                "statusReason": "unknown subscriber",
                "statusErrorCode": "1",
                "statusDatetime": "2030-01-01T12:00:05+00:00",
                "mccmnc": "20408",
                "ported": "0",
            },
        )

        assert answer.status_code == 200, answer.text
        final = await settled(gw, message["id"], "undelivered")
        assert final["failure_reason"] == "unknown subscriber"
        [event] = [e for e in final["history"] if e["kind"] == "report"]
        assert (event["detail"]["error_code"], event["detail"]["recipient"]) == (
            "1",
            "+31612345678",
        )


# ---------------------------------------------------------------- Vonage


async def test_vonage_json_delivery_receipt(database_url: str, tmp_path: Path) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "vonage",
                "request": {
                    "url": base + "/vonage/sms/json",
                    "body": {
                        "form": {
                            "api_key": "{{secret.api_key}}",
                            "api_secret": "{{secret.api_secret}}",
                            "from": "{{sender}}",
                            "to": "{{to}}",
                            "text": "{{body}}",
                            "callback": "{{callback_url}}",
                            "client-ref": "{{message_id}}",
                        }
                    },
                    "phone_format": "e164_digits",
                },
                "response": {
                    "success_when": {"path": "$.messages[0].status", "equals": "0"},
                    "message_id": "$.messages[*]['message-id']",
                },
                "delivery": {
                    "message_id": "messageId",
                    "recipient": "msisdn",
                    "status": "status",
                    "error_code": "err-code",
                    "timestamp": "message-timestamp",
                    "delivered": ["delivered"],
                    "failed": ["expired", "failed", "rejected", "undelivered"],
                    "pending": ["accepted", "buffered", "unknown"],
                },
                "secrets": {"api_key": "abcd1234", "api_secret": "s3cret"},
            },
        )
        [message] = await send(gw, "vonage", "+447911123456")
        assert providers.received[0].form["client-ref"] == message["id"]
        receipt = {
            "msisdn": "447911123456",
            "to": "ACME",
            "network-code": "23410",
            "messageId": message["provider_ids"][0],
            "price": "0.03330000",
            "scts": "3001011200",
            "err-code": "0",
            "api-key": "abcd1234",
            "client-ref": message["id"],
            "message-timestamp": "2030-01-01 12:00:05",
        }

        await post_json(gw, url, {**receipt, "status": "accepted"})
        await post_json(gw, url, {**receipt, "status": "delivered"})

        delivered = await settled(gw, message["id"], "delivered")
        assert reports(delivered) == ["accepted", "delivered"]
        assert delivered["failure_reason"] is None


# ---------------------------------------------------------------- Sinch


async def test_sinch_batch_report_by_batch_id_and_recipient(
    database_url: str, tmp_path: Path
) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "sinch",
                "request": {
                    "url": base + "/sinch/xms/v1/{{secret.service_plan_id}}/batches",
                    "auth": {"type": "bearer", "token": "{{secret.api_token}}"},
                    "body": {
                        "json": {
                            "from": "{{sender}}",
                            "to": ["{{to}}"],
                            "body": "{{body}}",
                            "delivery_report": "full",
                            "callback_url": "{{callback_url}}",
                        }
                    },
                },
                "batch": {"size": 1000, "mode": "values", "path": "to", "value": "{{to}}"},
                "response": {"success_status": [201], "message_id": "$.id"},
                "delivery": {
                    "reports": "$.statuses[*].recipients[*]",
                    "message_id": "^^.batch_id",
                    "recipient": "$",
                    "status": "^.status",
                    "error_code": "^.code",
                    "delivered": ["Delivered"],
                    "failed": ["Aborted", "Cancelled", "Rejected", "Deleted", "Failed", "Expired"],
                    "pending": ["Queued", "Dispatched", "Unknown"],
                },
                "secrets": {"service_plan_id": "plan42", "api_token": "sn-t0ken"},
            },
        )
        first, second = await send(gw, "sinch", "+447911123456", "+447911123457")
        # One request for both: one batch id that only the recipient tells apart.
        [request] = providers.received
        assert request.json["to"] == ["+447911123456", "+447911123457"]
        assert first["provider_ids"] == second["provider_ids"]

        await post_json(
            gw,
            url,
            {
                "type": "delivery_report_sms",
                "batch_id": first["provider_ids"][0],
                "total_message_count": 2,
                "statuses": [
                    {"code": 0, "status": "Delivered", "count": 1, "recipients": ["447911123456"]},
                    {"code": 402, "status": "Failed", "count": 1, "recipients": ["447911123457"]},
                ],
            },
        )

        assert (await settled(gw, first["id"], "delivered"))["status"] == "delivered"
        failed = await settled(gw, second["id"], "undelivered")
        assert failed["failure_reason"] == "error code 402"


# ---------------------------------------------------------------- MSG91


async def test_msg91_json_in_a_form_field_by_request_id_and_number(
    database_url: str, tmp_path: Path
) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "msg91",
                "request": {
                    "url": base + "/msg91/api/v5/flow/",
                    "headers": {"authkey": "{{secret.authkey}}"},
                    "body": {"json": {"template_id": "63f0a1b2c3", "short_url": "0"}},
                    "phone_format": "e164_digits",
                },
                "batch": {
                    "size": 1000,
                    "mode": "items",
                    "path": "recipients",
                    "item": {"mobiles": "{{to}}", "VAR1": "{{body}}"},
                },
                "response": {"message_id": "$.message"},
                "delivery": {
                    "decode": ["data"],
                    "reports": "$.data[*].report[*]",
                    "message_id": "^.requestId",
                    "recipient": "number",
                    "status": "status",
                    "reason": "desc",
                    "timestamp": "date",
                    "delivered": ["1"],
                    "failed": ["2", "9", "16", "17", "25"],
                },
                "secrets": {"authkey": "m91-k3y"},
            },
        )
        first, second = await send(gw, "msg91", "+919812345678", "+919812345679")
        [request] = providers.received
        assert [r["mobiles"] for r in request.json["recipients"]] == [
            "919812345678",
            "919812345679",
        ]
        data = [
            {
                "senderId": "SMSIND",
                "requestId": first["provider_ids"][0],
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
                "userId": "123456",
                "campaignName": "viaSOCKET",
            }
        ]

        answer = await gw.client.post(
            url,
            content=urlencode({"data": json.dumps(data)}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

        assert answer.status_code == 200
        assert (await settled(gw, first["id"], "delivered"))["status"] == "delivered"
        ndnc = await settled(gw, second["id"], "undelivered")
        assert ndnc["failure_reason"] == "NDNC"


# ---------------------------------------------------------------- Textlocal


async def test_textlocal_receipt_echoes_our_id_as_custom_id(
    database_url: str, tmp_path: Path
) -> None:
    async with providers_and_gateway(database_url, tmp_path) as (providers, base, gw):
        url = await add_connector(
            gw,
            {
                "name": "textlocal",
                "request": {
                    "url": base + "/textlocal/send/",
                    "body": {
                        "form": {
                            "apikey": "{{secret.apikey}}",
                            "numbers": "{{to}}",
                            "sender": "{{sender}}",
                            "message": "{{body}}",
                            "custom": "{{message_id}}",
                            "receipt_url": "{{callback_url}}",
                        }
                    },
                    "phone_format": "e164_digits",
                },
                "response": {
                    "success_when": {"path": "$.status", "equals": "success"},
                    "message_id": "$.messages[*].id",
                },
                "delivery": {
                    "message_id": "customID",
                    "match": "message_id",
                    "recipient": "number",
                    "status": "status",
                    "timestamp": "datetime",
                    "delivered": ["D"],
                    "failed": ["U", "I"],
                    "pending": ["?"],
                },
                "secrets": {"apikey": "tl-k3y"},
            },
        )
        delivered, undelivered = await send(gw, "textlocal", "+447911123456", "+447911123457")
        assert providers.received[0].form["receipt_url"] == url

        for message, status in ((delivered, "D"), (undelivered, "U")):
            answer = await gw.client.post(
                url,
                data={
                    "number": message["to"].lstrip("+"),
                    "status": status,
                    "customID": message["id"],
                    "datetime": "1893499205",
                },
            )
            assert answer.status_code == 200

        assert (await settled(gw, delivered["id"], "delivered"))["status"] == "delivered"
        failed = await settled(gw, undelivered["id"], "undelivered")
        assert failed["failure_reason"] == "status U"
        [event] = [e for e in failed["history"] if e["kind"] == "report"]
        assert event["detail"]["message_ref"] == undelivered["id"]
