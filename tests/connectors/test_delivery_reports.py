"""Delivery-report callbacks of real providers, read with a `delivery` mapping (provider-notes §3).

Each payload uses the field names of the provider's own documentation; each mapping is
what a user would write in the connector document.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from smsrelay.connectors.definition import Delivery, parse_definition
from smsrelay.connectors.delivery import (
    classify_status,
    decode_callback,
    list_fields,
    normalise_recipient,
    parse_delivery_callback,
    suggest_delivery_mapping,
)
from smsrelay.connectors.errors import CallbackError
from smsrelay.connectors.exchange import DeliveryOutcome, InboundCallback

DELIVERED = DeliveryOutcome.DELIVERED
FAILED = DeliveryOutcome.FAILED
PENDING = DeliveryOutcome.PENDING

DLR_URL = "https://relay.example.com/dlr/k3y"


def delivery(mapping: dict[str, Any]) -> Delivery:
    """The `delivery` section as validated inside a minimal, complete connector."""
    definition = parse_definition(
        {
            "name": "provider",
            "request": {
                "url": "https://sms.example.com/send",
                "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
            },
            "delivery": mapping,
        }
    )
    assert definition.delivery is not None
    return definition.delivery


def json_callback(document: Any, content_type: str | None = "application/json") -> InboundCallback:
    return InboundCallback(
        method="POST",
        url=DLR_URL,
        query=(),
        headers={},
        body=json.dumps(document).encode(),
        content_type=content_type,
    )


def form_callback(
    fields: dict[str, str] | list[tuple[str, str]], query: list[tuple[str, str]] | None = None
) -> InboundCallback:
    return InboundCallback(
        method="POST",
        url=DLR_URL + ("?" + urlencode(query) if query else ""),
        query=tuple(query or ()),
        headers={},
        body=urlencode(fields).encode(),
        content_type="application/x-www-form-urlencoded",
    )


def get_callback(query: list[tuple[str, str]]) -> InboundCallback:
    return InboundCallback(
        method="GET",
        url=DLR_URL + "?" + urlencode(query),
        query=tuple(query),
        headers={},
        body=b"",
    )


def multipart_callback(fields: list[tuple[str, str]], boundary: str = "XyZ42") -> InboundCallback:
    lines: list[str] = []
    for name, value in fields:
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    lines += [f"--{boundary}--", ""]
    return InboundCallback(
        method="POST",
        url=DLR_URL,
        query=(),
        headers={},
        body="\r\n".join(lines).encode(),
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def outcomes(spec: Delivery, callback: InboundCallback) -> list[tuple[str, str | None, str]]:
    return [(r.key, r.recipient, r.outcome.value) for r in parse_delivery_callback(spec, callback)]


# ---------------------------------------------------------------- providers


INFOBIP = delivery(
    {
        "reports": "$.results[*]",
        "message_id": "messageId",
        "recipient": "to",
        "status": "status.name",
        "reason": "status.description",
        "error_code": "error.id",
        "timestamp": "doneAt",
        "delivered": ["DELIVERED_TO_HANDSET"],
        "pending": ["DELIVERED_TO_OPERATOR", "re:^PENDING"],
        "failed": ["re:^(UNDELIVERABLE|EXPIRED|REJECTED)"],
    }
)


def infobip_result(message_id: str, group: str, name: str, status_id: int) -> dict[str, Any]:
    return {
        "bulkId": "BULK-1",
        "messageId": message_id,
        "to": "41793026727",
        "sentAt": "2024-03-01T10:00:00.000+0000",
        "doneAt": "2024-03-01T10:00:05.000+0000",
        "smsCount": 1,
        "mccMnc": "22801",
        "callbackData": "ours-1",
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": {
            "groupId": 3,
            "groupName": group,
            "id": status_id,
            "name": name,
            "description": name.replace("_", " ").lower(),
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


def test_infobip_delivered_to_operator_is_pending_and_to_handset_is_delivered() -> None:
    callback = json_callback(
        {
            "results": [
                infobip_result("m-1", "DELIVERED", "DELIVERED_TO_OPERATOR", 2),
                infobip_result("m-2", "DELIVERED", "DELIVERED_TO_HANDSET", 5),
                infobip_result("m-3", "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", 9),
                infobip_result("m-4", "PENDING", "PENDING_ENROUTE", 7),
            ]
        }
    )
    reports = parse_delivery_callback(INFOBIP, callback)
    assert [(r.key, r.outcome) for r in reports] == [
        ("m-1", PENDING),
        ("m-2", DELIVERED),
        ("m-3", FAILED),
        ("m-4", PENDING),
    ]
    assert reports[1].recipient == "+41793026727"
    assert reports[1].timestamp == "2024-03-01T10:00:05.000+0000"
    assert reports[1].error_code == "0"
    assert reports[1].fields["$.status.groupName"] == "DELIVERED"


MSG91_V2 = delivery(
    {
        "decode": ["data"],
        "reports": "$.data[*].report[*]",
        "message_id": "^.requestId",
        "recipient": "number",
        "status": "status",
        "reason": "desc",
        "timestamp": "date",
        "delivered": ["1"],
        "failed": ["2", "9", "16", "17", "25"],
    }
)


def test_msg91_json_array_inside_a_form_field_yields_one_report_per_number() -> None:
    data = [
        {
            "senderId": "SMSIND",
            "requestId": "3763646c3058373530393138",
            "report": [
                {
                    "date": "2024-03-01 10:00:05",
                    "number": "919999999999",
                    "status": "1",
                    "desc": "DELIVERED",
                },
                {
                    "date": "2024-03-01 10:00:07",
                    "number": "918888888888",
                    "status": "9",
                    "desc": "NDNC",
                },
            ],
            "userId": "123456",
            "campaignName": "viaSOCKET",
        },
        {
            "senderId": "SMSIND",
            "requestId": "3763646c3058373530393139",
            "report": [
                {
                    "date": "2024-03-01 10:01:00",
                    "number": "917777777777",
                    "status": 1,
                    "desc": "DELIVERED",
                }
            ],
            "userId": "123456",
            "campaignName": "viaSOCKET",
        },
    ]
    reports = parse_delivery_callback(MSG91_V2, form_callback({"data": json.dumps(data)}))
    assert [(r.key, r.recipient, r.outcome) for r in reports] == [
        ("3763646c3058373530393138", "+919999999999", DELIVERED),
        ("3763646c3058373530393138", "+918888888888", FAILED),
        # status given as the number 1 still matches the listed "1"
        ("3763646c3058373530393139", "+917777777777", DELIVERED),
    ]
    assert reports[1].reason == "NDNC"
    assert reports[0].fields["^.requestId"] == "3763646c3058373530393138"


SINCH_BATCH = delivery(
    {
        "reports": "$.statuses[*].recipients[*]",
        "message_id": "^^.batch_id",
        "recipient": "$",
        "status": "^.status",
        "error_code": "^.code",
        "delivered": ["Delivered"],
        "failed": ["Aborted", "Cancelled", "Rejected", "Deleted", "Failed", "Expired"],
        "pending": ["Queued", "Dispatched", "Unknown"],
    }
)


def test_sinch_batch_report_is_keyed_by_batch_id_and_recipient() -> None:
    callback = json_callback(
        {
            "type": "delivery_report_sms",
            "batch_id": "01FC66621XXXXX119Z8PMV1QPQ",
            "total_message_count": 3,
            "statuses": [
                {
                    "code": 0,
                    "status": "Delivered",
                    "count": 2,
                    "recipients": ["44231235674", "44231235675"],
                },
                {"code": 402, "status": "Failed", "count": 1, "recipients": ["44231235676"]},
            ],
        }
    )
    assert outcomes(SINCH_BATCH, callback) == [
        ("01FC66621XXXXX119Z8PMV1QPQ", "+44231235674", "delivered"),
        ("01FC66621XXXXX119Z8PMV1QPQ", "+44231235675", "delivered"),
        ("01FC66621XXXXX119Z8PMV1QPQ", "+44231235676", "failed"),
    ]
    assert parse_delivery_callback(SINCH_BATCH, callback)[2].error_code == "402"


def test_sinch_per_recipient_report_reads_flat_fields() -> None:
    spec = delivery(
        {
            "message_id": "batch_id",
            "recipient": "recipient",
            "status": "status",
            "error_code": "code",
            "timestamp": "at",
            "delivered": ["Delivered"],
            "failed": ["Failed", "Rejected", "Expired"],
            "pending": ["Queued", "Dispatched"],
        }
    )
    callback = json_callback(
        {
            "type": "recipient_delivery_report_sms",
            "batch_id": "01FC66621XXXXX119Z8PMV1QPQ",
            "recipient": "+44231235674",
            "code": 401,
            "status": "Dispatched",
            "at": "2024-03-01T10:00:00.000Z",
            "client_reference": "ours-7",
        }
    )
    [report] = parse_delivery_callback(spec, callback)
    assert (report.key, report.recipient, report.outcome) == (
        "01FC66621XXXXX119Z8PMV1QPQ",
        "+44231235674",
        PENDING,
    )
    assert report.timestamp == "2024-03-01T10:00:00.000Z"


MESSAGEBIRD = delivery(
    {
        "message_id": "id",
        "recipient": "recipient",
        "status": "status",
        "reason": "statusReason",
        "error_code": "statusErrorCode",
        "timestamp": "statusDatetime",
        "delivered": ["delivered"],
        "failed": ["expired", "delivery_failed"],
        "pending": ["scheduled", "sent", "buffered"],
    }
)


def test_messagebird_get_query_string_report() -> None:
    callback = get_callback(
        [
            ("id", "efa6405d518d4c0c88cce11f7db775fb"),
            ("reference", "ours-42"),
            ("recipient", "31612345678"),
            ("status", "delivery_failed"),
            ("statusReason", "unknown subscriber"),
            ("statusErrorCode", "1"),
            ("statusDatetime", "2024-03-01T10:00:00+00:00"),
            ("mccmnc", "20408"),
            ("ported", "0"),
        ]
    )
    [report] = parse_delivery_callback(MESSAGEBIRD, callback)
    assert report.key == "efa6405d518d4c0c88cce11f7db775fb"
    assert report.outcome is FAILED
    assert report.recipient == "+31612345678"
    assert report.reason == "unknown subscriber"
    assert report.error_code == "1"


def test_gupshup_get_report_with_external_id() -> None:
    spec = delivery(
        {
            "message_id": "externalId",
            "recipient": "phoneNo",
            "status": "status",
            "reason": "cause",
            "error_code": "errCode",
            "delivered": ["SUCCESS", "DELIVERED"],
            "failed": ["FAILED"],
        }
    )
    callback = get_callback(
        [
            ("externalId", "3955130551476012345"),
            ("deliveredTS", "1709287205000"),
            ("status", "SUCCESS"),
            ("phoneNo", "919812345678"),
            ("cause", "SUCCESS"),
            ("errCode", "000"),
            ("noOfFrags", "1"),
        ]
    )
    assert outcomes(spec, callback) == [("3955130551476012345", "+919812345678", "delivered")]


TWILIO = delivery(
    {
        "message_id": "MessageSid",
        "recipient": "To",
        "status": "MessageStatus",
        "error_code": "ErrorCode",
        "delivered": ["delivered"],
        "failed": ["failed", "undelivered", "canceled"],
        "pending": ["queued", "sending", "sent", "accepted", "scheduled"],
    }
)


def twilio_fields(status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": "SM5ef8732a3c49700934481addd5ce1659",
        "SmsSid": "SM5ef8732a3c49700934481addd5ce1659",
        "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "From": "+15017122661",
        "To": "+15558675310",
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("sent", PENDING),
        ("delivered", DELIVERED),
        ("undelivered", FAILED),
        ("Delivered", DELIVERED),
    ],
)
def test_twilio_form_status_callback(status: str, expected: DeliveryOutcome) -> None:
    [report] = parse_delivery_callback(TWILIO, form_callback(twilio_fields(status)))
    assert report.key == "SM5ef8732a3c49700934481addd5ce1659"
    assert report.outcome is expected
    assert report.raw_status == status


def test_twilio_error_code_is_reported_with_the_failure() -> None:
    callback = form_callback(twilio_fields("undelivered", ErrorCode="30003"))
    [report] = parse_delivery_callback(TWILIO, callback)
    assert (report.outcome, report.error_code, report.recipient) == (
        FAILED,
        "30003",
        "+15558675310",
    )


def test_8x8_nested_json_report() -> None:
    spec = delivery(
        {
            "message_id": "$.payload.umid",
            "recipient": "$.payload.msisdn",
            "status": "$.payload.status.state",
            "reason": "$.payload.status.detail",
            "timestamp": "$.payload.status.timestamp",
            "delivered": ["delivered"],
            "failed": ["rejected", "undelivered"],
            "pending": ["queued", "sent"],
        }
    )
    callback = json_callback(
        {
            "namespace": "SMS",
            "eventType": "outbound_message_status_changed",
            "description": "Outbound message status changed",
            "payload": {
                "umid": "0f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
                "batchId": "b1a2c3d4-0000-0000-0000-000000000001",
                "clientMessageId": "ours-9",
                "subAccountId": "acme_hq",
                "country": "SG",
                "msisdn": "+6598765432",
                "status": {
                    "state": "delivered",
                    "detail": "delivered_to_recipient",
                    "timestamp": "2024-03-01T10:00:05.00Z",
                },
                "price": {"total": 0.0075, "perSms": 0.0075, "currency": "EUR"},
                "smsCount": 1,
            },
        }
    )
    [report] = parse_delivery_callback(spec, callback)
    assert (report.key, report.outcome, report.reason) == (
        "0f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
        DELIVERED,
        "delivered_to_recipient",
    )
    assert report.recipient == "+6598765432"


def test_telnyx_reads_the_first_recipient_status() -> None:
    spec = delivery(
        {
            "message_id": "data.payload.id",
            "recipient": "data.payload.to[0].phone_number",
            "status": "data.payload.to[0].status",
            "error_code": "data.payload.errors[0].code",
            "reason": "data.payload.errors[0].title",
            "delivered": ["delivered"],
            "failed": ["sending_failed", "delivery_failed", "expired"],
            "pending": ["queued", "sending", "sent", "delivery_unconfirmed"],
        }
    )
    callback = json_callback(
        {
            "data": {
                "event_type": "message.finalized",
                "id": "86f58db9-0734-4645-b7e8-4d3a3b2d6e71",
                "occurred_at": "2024-03-01T10:00:05.000+00:00",
                "payload": {
                    "id": "40385f64-5717-4562-b3fc-2c963f66afa6",
                    "record_type": "message",
                    "direction": "outbound",
                    "type": "SMS",
                    "from": {
                        "phone_number": "+18445550001",
                        "carrier": "Telnyx",
                        "line_type": "VoIP",
                    },
                    "to": [
                        {
                            "phone_number": "+18665550001",
                            "status": "delivery_failed",
                            "carrier": "T-Mobile USA",
                            "line_type": "Wireless",
                        }
                    ],
                    "errors": [
                        {"code": "40008", "title": "Undeliverable", "detail": "carrier rejected"}
                    ],
                },
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": "https://relay.example.com/dlr/k3y"},
        }
    )
    [report] = parse_delivery_callback(spec, callback)
    assert report.key == "40385f64-5717-4562-b3fc-2c963f66afa6"
    assert (report.outcome, report.error_code, report.reason) == (FAILED, "40008", "Undeliverable")
    assert report.recipient == "+18665550001"


VONAGE = delivery(
    {
        "message_id": "messageId",
        "recipient": "msisdn",
        "status": "status",
        "error_code": "err-code",
        "timestamp": "message-timestamp",
        "delivered": ["delivered"],
        "failed": ["expired", "failed", "rejected", "undelivered"],
        "pending": ["accepted", "buffered", "unknown"],
    }
)


def vonage_receipt(message_id: str, status: str, err_code: str) -> dict[str, str]:
    return {
        "msisdn": "447700900000",
        "to": "AcmeInc",
        "network-code": "23410",
        "messageId": message_id,
        "price": "0.03330000",
        "status": status,
        "scts": "2403011000",
        "err-code": err_code,
        "api-key": "abcd1234",
        "client-ref": "ours-5",
        "message-timestamp": "2024-03-01 10:00:05",
    }


def test_vonage_multipart_message_gets_one_receipt_per_part() -> None:
    part_one = parse_delivery_callback(
        VONAGE, json_callback(vonage_receipt("0A0000001234567B", "delivered", "0"))
    )
    part_two = parse_delivery_callback(
        VONAGE, get_callback(list(vonage_receipt("0A0000001234567C", "expired", "1").items()))
    )
    assert [(r.key, r.outcome, r.error_code) for r in part_one + part_two] == [
        ("0A0000001234567B", DELIVERED, "0"),
        ("0A0000001234567C", FAILED, "1"),
    ]
    assert part_one[0].recipient == "+447700900000"


def test_textlocal_receipt_is_matched_by_our_echoed_custom_id() -> None:
    spec = delivery(
        {
            "message_id": "customID",
            "match": "message_id",
            "recipient": "number",
            "status": "status",
            "timestamp": "datetime",
            "delivered": ["D"],
            "failed": ["U", "I"],
            "pending": ["?"],
        }
    )
    callback = form_callback(
        {"number": "447123456789", "status": "U", "customID": "msg_01HQ", "datetime": "1709287205"}
    )
    [report] = parse_delivery_callback(spec, callback)
    assert spec.match == "message_id"
    assert (report.key, report.recipient, report.outcome) == ("msg_01HQ", "+447123456789", FAILED)


def test_termii_free_text_statuses_map_through_regular_expressions() -> None:
    spec = delivery(
        {
            "message_id": "message_id",
            "recipient": "receiver",
            "status": "status",
            "delivered": ["re:delivered"],
            "failed": ["re:failed", "re:DND active"],
            "pending": ["re:^message sent"],
        }
    )

    def termii(status: str) -> InboundCallback:
        return json_callback(
            {
                "type": "sms",
                "id": "a1b2c3",
                "message_id": "3017544054459484",
                "receiver": "2347012345678",
                "sender": "Acme",
                "message": "Your code is 1234",
                "sent_at": "2024-03-01 10:00:00",
                "cost": "2.50",
                "status": status,
                "channel": "generic",
            }
        )

    seen = {
        status: parse_delivery_callback(spec, termii(status))[0].outcome
        for status in (
            "DELIVERED",
            "Message delivered to handset",
            "Message Failed",
            "DND Active on Phone Number",
            "Message Sent",
        )
    }
    assert seen == {
        "DELIVERED": DELIVERED,
        "Message delivered to handset": DELIVERED,
        "Message Failed": FAILED,
        "DND Active on Phone Number": FAILED,
        "Message Sent": PENDING,
    }


def test_bulksms_root_array_of_messages() -> None:
    spec = delivery(
        {
            "reports": "$[*]",
            "message_id": "id",
            "recipient": "to",
            "status": "status.type",
            "reason": "status.subtype",
            "delivered": ["DELIVERED"],
            "failed": ["FAILED"],
            "pending": ["ACCEPTED", "SCHEDULED", "SENT", "UNKNOWN"],
        }
    )

    def message(message_id: str, status_type: str, subtype: str | None) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "SENT",
            "from": "Acme",
            "to": "27831234567",
            "body": None,
            "encoding": "TEXT",
            "protocolId": 0,
            "messageClass": 2,
            "numberOfParts": 1,
            "creditCost": 1,
            "submission": {"id": "2-00000000001", "date": "2024-03-01T10:00:00Z"},
            "status": {
                "id": f"{status_type}.{subtype or 'NULL'}",
                "type": status_type,
                "subtype": subtype,
            },
            "relatedSentMessageId": None,
            "userSuppliedId": "ours-3",
        }

    callback = json_callback(
        [message("1001", "DELIVERED", None), message("1002", "FAILED", "EXPIRED")]
    )
    reports = parse_delivery_callback(spec, callback)
    assert [(r.key, r.outcome, r.reason) for r in reports] == [
        ("1001", DELIVERED, None),
        ("1002", FAILED, "EXPIRED"),
    ]


def test_textmagic_legacy_multipart_callback() -> None:
    spec = delivery(
        {
            "message_id": "message_id",
            "status": "status",
            "timestamp": "timestamp",
            "delivered": ["d"],
            "failed": ["e", "f", "j"],
            "pending": ["q", "r", "a", "b", "s", "u"],
        }
    )
    callback = multipart_callback(
        [
            ("message_id", "49575710"),
            ("status", "d"),
            ("timestamp", "1709287205"),
            ("credits_cost", "1"),
        ]
    )
    [report] = parse_delivery_callback(spec, callback)
    assert (report.key, report.outcome, report.timestamp) == ("49575710", DELIVERED, "1709287205")


def test_aws_event_inside_an_sns_envelope_is_decoded_first() -> None:
    spec = delivery(
        {
            "decode": ["Message"],
            "message_id": "Message.messageId",
            "recipient": "Message.destinationPhoneNumber",
            "status": "Message.eventType",
            "reason": "Message.messageStatusDescription",
            "delivered": ["TEXT_DELIVERED", "TEXT_SUCCESSFUL"],
            "failed": [
                "re:^TEXT_(BLOCKED|TTL_EXPIRED|CARRIER_UNREACHABLE|INVALID|UNREACHABLE|SPAM|UNKNOWN)$"
            ],
            "pending": ["TEXT_QUEUED", "TEXT_PENDING"],
        }
    )
    event = {
        "eventType": "TEXT_DELIVERED",
        "eventVersion": "1.0",
        "eventTimestamp": 1709287205000,
        "isFinal": True,
        "originationPhoneNumber": "+12065550152",
        "destinationPhoneNumber": "+14255550156",
        "isoCountryCode": "US",
        "messageId": "862df1b9-0a40-4a18-8f0a-c1d5e8b14c2d",
        "messageStatus": "DELIVERED",
        "messageStatusDescription": "Message has been accepted by phone",
        "totalMessageParts": 1,
    }
    envelope = {
        "Type": "Notification",
        "MessageId": "7c1f5a0b-sns-envelope-id",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:sms-events",
        "Message": json.dumps(event),
        "Timestamp": "2024-03-01T10:00:05.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    # SNS posts JSON labelled text/plain
    [report] = parse_delivery_callback(spec, json_callback(envelope, "text/plain; charset=UTF-8"))
    assert (report.key, report.outcome, report.recipient) == (
        "862df1b9-0a40-4a18-8f0a-c1d5e8b14c2d",
        DELIVERED,
        "+14255550156",
    )


def test_africas_talking_form_report_with_failure_reason() -> None:
    spec = delivery(
        {
            "message_id": "id",
            "recipient": "phoneNumber",
            "status": "status",
            "reason": "failureReason",
            "delivered": ["Success"],
            "failed": ["Rejected", "Failed"],
            "pending": ["Sent", "Submitted", "Buffered"],
        }
    )
    callback = form_callback(
        {
            "id": "ATXid_f9a2b3c4",
            "status": "Failed",
            "phoneNumber": "+254711XXXYYY",
            "networkCode": "63902",
            "failureReason": "DeliveryFailure",
            "retryCount": "0",
        }
    )
    [report] = parse_delivery_callback(spec, callback)
    assert (report.outcome, report.reason) == (FAILED, "DeliveryFailure")
    assert report.recipient == "+254711XXXYYY"  # not a number: kept as given


def test_exotel_form_report() -> None:
    spec = delivery(
        {
            "message_id": "SmsSid",
            "recipient": "To",
            "status": "Status",
            "reason": "DetailedStatus",
            "error_code": "DetailedStatusCode",
            "delivered": ["sent"],
            "failed": ["failed", "failed_dnd", "expired", "undelivered"],
            "pending": ["queued", "sending", "submitted"],
        }
    )
    callback = form_callback(
        {
            "SmsSid": "1e1ef5fd8e0d9e3e1b0f7b83d8b6a9c2",
            "To": "09812345678",
            "Status": "failed_dnd",
            "DetailedStatus": "FAILED_DND",
            "DetailedStatusCode": "22003",
            "DateSent": "2024-03-01 15:30:05",
        }
    )
    [report] = parse_delivery_callback(spec, callback)
    assert (report.outcome, report.reason, report.error_code) == (FAILED, "FAILED_DND", "22003")


# ---------------------------------------------------------------- decoding rules


def test_repeated_form_key_becomes_a_list() -> None:
    callback = form_callback([("to", "1"), ("to", "2"), ("status", "ok")])
    assert decode_callback(callback) == {"to": ["1", "2"], "status": "ok"}


def test_post_with_query_and_form_body_merges_and_body_wins() -> None:
    callback = form_callback(
        {"status": "delivered", "id": "body-id"}, query=[("id", "query-id"), ("ref", "r1")]
    )
    assert decode_callback(callback) == {"id": "body-id", "ref": "r1", "status": "delivered"}


def test_json_without_content_type_is_recognised() -> None:
    callback = json_callback([{"id": "1"}], content_type=None)
    assert decode_callback(callback) == [{"id": "1"}]


def test_content_type_in_headers_is_used_when_not_given_separately() -> None:
    callback = InboundCallback(
        method="POST",
        url=DLR_URL,
        query=(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=b"id=9&status=D",
    )
    assert decode_callback(callback) == {"id": "9", "status": "D"}


def test_multipart_file_parts_are_ignored() -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="status"\r\n\r\ndelivered\r\n'
        b'--b\r\nContent-Disposition: form-data; name="log"; filename="x.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nignored\r\n--b--\r\n"
    )
    callback = InboundCallback("POST", DLR_URL, (), {}, body, "multipart/form-data; boundary=b")
    assert decode_callback(callback) == {"status": "delivered"}


def test_xml_callback_is_read_like_xmltodict() -> None:
    callback = InboundCallback(
        "POST", DLR_URL, (), {}, b"<dlr><id>7</id><status>DELIVRD</status></dlr>", "text/xml"
    )
    assert decode_callback(callback) == {"dlr": {"id": "7", "status": "DELIVRD"}}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"id": 1,', "application/json", "not valid JSON"),
        (b'"just a string"', "application/json", "object or an array"),
        (b"\xff\xfe\x00garbage", "application/json", "not valid utf-8"),
        (b"binary\x00data", "application/pdf", "cannot read a application/pdf body"),
        (b"no boundary here", "multipart/form-data", "boundary"),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", "application/xml", "XML"),
    ],
)
def test_undecodable_body_raises_a_callback_error_saying_why(
    body: bytes, content_type: str, message: str
) -> None:
    callback = InboundCallback("POST", DLR_URL, (), {}, body, content_type)
    with pytest.raises(CallbackError, match=message):
        decode_callback(callback)


def test_decode_path_with_invalid_json_names_the_path() -> None:
    callback = form_callback({"data": "[{not json"})
    with pytest.raises(CallbackError, match=r"decode data: the value at \$\['data'\]"):
        decode_callback(callback, ["data"])


def test_decode_paths_may_use_wildcards() -> None:
    document = {"Records": [{"Sns": {"Message": '{"id": 1}'}}, {"Sns": {"Message": '{"id": 2}'}}]}
    decoded = decode_callback(json_callback(document), ["$.Records[*].Sns.Message"])
    assert decoded == {
        "Records": [{"Sns": {"Message": {"id": 1}}}, {"Sns": {"Message": {"id": 2}}}]
    }


def test_empty_get_callback_yields_no_reports() -> None:
    assert parse_delivery_callback(TWILIO, get_callback([])) == []


# ---------------------------------------------------------------- mapping rules


def test_reports_without_a_key_are_skipped() -> None:
    spec = delivery({"reports": "$[*]", "message_id": "id", "status": "status"})
    callback = json_callback(
        [
            {"status": "delivered"},
            {"id": "", "status": "delivered"},
            {"id": "k", "status": "delivered"},
        ]
    )
    assert outcomes(spec, callback) == [("k", None, "delivered")]


def test_report_without_status_is_failed_with_a_reason() -> None:
    spec = delivery({"message_id": "id", "status": "status"})
    [report] = parse_delivery_callback(spec, json_callback({"id": "k"}))
    assert (report.outcome, report.reason, report.raw_status) == (FAILED, "no status in report", "")


def test_status_in_no_list_is_failed_and_says_so() -> None:
    spec = delivery({"message_id": "id", "status": "status", "pending": ["sent"]})
    [report] = parse_delivery_callback(spec, json_callback({"id": "k", "status": "mystery"}))
    assert report.outcome is FAILED
    assert report.reason == "status 'mystery' is not listed in delivered, failed or pending"


def test_exact_entries_beat_regular_expressions_across_lists() -> None:
    spec = delivery(
        {
            "message_id": "id",
            "status": "s",
            "delivered": ["re:^DELIVERED"],
            "pending": ["delivered_to_operator"],
        }
    )
    assert classify_status(spec, "DELIVERED_TO_OPERATOR") is PENDING
    assert classify_status(spec, "DELIVERED_TO_HANDSET") is DELIVERED
    assert classify_status(spec, "other") is None


def test_a_value_listed_twice_takes_the_cautious_reading() -> None:
    spec = delivery(
        {
            "message_id": "id",
            "status": "s",
            "delivered": ["sent"],
            "failed": ["x"],
            "pending": ["SENT"],
        }
    )
    assert classify_status(spec, "Sent") is PENDING
    both_regex = delivery(
        {"message_id": "id", "status": "s", "delivered": ["re:ok"], "failed": ["re:ok"]}
    )
    assert classify_status(both_regex, "ok") is FAILED


def test_status_matching_ignores_case_and_surrounding_space() -> None:
    spec = delivery({"message_id": "id", "status": "s", "delivered": ["DELIVRD"]})
    assert classify_status(spec, " delivrd ") is DELIVERED


def test_parent_path_above_the_root_finds_nothing() -> None:
    spec = delivery({"message_id": "^.id", "status": "status"})
    assert parse_delivery_callback(spec, json_callback({"id": "k", "status": "delivered"})) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("447700900123", "+447700900123"),
        ("+44 7700 900-123", "+447700900123"),
        ("(415) 555-0100", "+4155550100"),
        ("AcmeInc", "AcmeInc"),
        ("12345", "12345"),
        ("1234567890123456", "1234567890123456"),
    ],
)
def test_recipients_are_normalised_to_e164_when_they_look_like_numbers(
    raw: str, expected: str
) -> None:
    assert normalise_recipient(raw) == expected


# ---------------------------------------------------------------- mapping assistant


def test_list_fields_gives_every_leaf_with_a_readable_path() -> None:
    assert list_fields({"a": [{"message-id": 1}, []], "b": {"c": None}}) == [
        ("$.a[0]['message-id']", 1),
        ("$.a[1]", []),
        ("$.b.c", None),
    ]


def test_suggestion_for_infobip_batches_reads_status_name() -> None:
    sample = {"results": [infobip_result("m-1", "DELIVERED", "DELIVERED_TO_HANDSET", 5)]}
    suggestion = suggest_delivery_mapping(sample)
    assert suggestion["reports"] == "$.results[*]"
    assert suggestion["message_id"] == "$.messageId"
    assert suggestion["status"] == "$.status.name"
    assert suggestion["delivered"] == ["DELIVERED_TO_HANDSET"]
    assert "DELIVERED_TO_OPERATOR" in suggestion["pending"]


def test_suggestion_for_msg91_decodes_the_form_field_and_reads_the_request_id() -> None:
    data = [
        {
            "senderId": "SMSIND",
            "requestId": "r-1",
            "report": [{"date": "d", "number": "91999", "status": "1", "desc": "DELIVERED"}],
            "userId": "u",
        }
    ]
    document = decode_callback(form_callback({"data": json.dumps(data)}))
    suggestion = suggest_delivery_mapping(document)
    assert suggestion == {
        "decode": ["$.data"],
        "reports": "$.data[*].report[*]",
        "message_id": "^.requestId",
        "recipient": "$.number",
        "status": "$.status",
        "reason": "$.desc",
        "timestamp": "$.date",
        "delivered": ["1"],
        "failed": ["2", "9", "16", "17", "25"],
        "pending": [],
    }


def test_suggestion_for_sinch_batch_reports_iterates_recipients() -> None:
    sample = {
        "type": "delivery_report_sms",
        "batch_id": "B1",
        "statuses": [{"code": 0, "status": "Delivered", "count": 1, "recipients": ["44231235674"]}],
    }
    suggestion = suggest_delivery_mapping(sample)
    assert {k: suggestion[k] for k in ("reports", "message_id", "recipient", "status")} == {
        "reports": "$.statuses[*].recipients[*]",
        "message_id": "^^.batch_id",
        "recipient": "$",
        "status": "^.status",
    }


def test_suggestion_for_twilio_form_prefers_message_fields() -> None:
    suggestion = suggest_delivery_mapping(
        decode_callback(form_callback(twilio_fields("sent", ErrorCode="0")))
    )
    assert (suggestion["reports"], suggestion["message_id"], suggestion["status"]) == (
        "$",
        "$.MessageSid",
        "$.MessageStatus",
    )
    assert suggestion["error_code"] == "$.ErrorCode"
    assert "sent" in suggestion["pending"]


def test_suggestion_for_an_echoed_reference_proposes_matching_our_id() -> None:
    suggestion = suggest_delivery_mapping(
        {"number": "447", "status": "D", "customID": "ours", "datetime": "1"}
    )
    assert (suggestion["message_id"], suggestion["match"]) == ("$.customID", "message_id")
    assert suggestion["delivered"] == ["D"]


def test_suggestion_is_a_valid_mapping_that_reads_its_own_sample() -> None:
    sample = {"results": [infobip_result("m-1", "DELIVERED", "DELIVERED_TO_HANDSET", 5)]}
    spec = delivery(suggest_delivery_mapping(sample))
    [report] = parse_delivery_callback(spec, json_callback(sample))
    assert (report.key, report.outcome) == ("m-1", DELIVERED)


def test_suggestion_leaves_out_values_it_does_not_recognise() -> None:
    suggestion = suggest_delivery_mapping({"ref": "x", "state": "zz-top"})
    assert suggestion == {"reports": "$", "status": "$.state"}


def test_json_nested_too_deeply_is_refused_with_a_callback_error() -> None:
    callback = InboundCallback("POST", DLR_URL, (), {}, b"[" * 100_000, "application/json")
    with pytest.raises(CallbackError, match="too deeply"):
        decode_callback(callback)


def test_descendant_path_over_a_deep_document_is_a_callback_error() -> None:
    spec = delivery({"decode": ["$..Message"], "message_id": "id", "status": "status"})
    deep = b'{"a":' * 600 + b"1" + b"}" * 600
    callback = InboundCallback("POST", DLR_URL, (), {}, deep, "application/json")
    with pytest.raises(CallbackError, match=r"delivery.decode: \$\.\.Message"):
        parse_delivery_callback(spec, callback)


def test_suggestion_copes_with_a_deep_sample() -> None:
    deep: Any = {"id": "k", "status": "delivered"}
    for _ in range(900):
        deep = {"a": deep}
    suggestion = suggest_delivery_mapping(deep)
    assert suggestion["status"].endswith(".status")
