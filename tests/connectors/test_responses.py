"""Reading providers' answers to a send (provider-notes §2.7): one verdict per message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from smsrelay.connectors.definition import Response
from smsrelay.connectors.exchange import HttpResponse, SendOutcome, SendVerdict
from smsrelay.connectors.responses import (
    decode_response_body,
    parse_retry_after,
    parse_send_response,
    parse_xml_document,
)

ACCEPTED = SendOutcome.ACCEPTED
RETRY = SendOutcome.RETRY
REJECTED = SendOutcome.REJECTED


def response_spec(**fields: Any) -> Response:
    """A `response` section as a user writes it (aliases such as `in` accepted)."""
    return Response.model_validate(fields)


def json_response(status: int, document: Any, **headers: str) -> HttpResponse:
    return HttpResponse(
        status=status,
        headers={"Content-Type": "application/json", **headers},
        body=json.dumps(document).encode(),
    )


def text_response(status: int, text: str, content_type: str = "text/plain") -> HttpResponse:
    return HttpResponse(status=status, headers={"Content-Type": content_type}, body=text.encode())


def outcomes(verdict: SendVerdict) -> list[SendOutcome]:
    return [r.outcome for r in verdict.results]


def ids(verdict: SendVerdict) -> list[tuple[str, ...]]:
    return [r.provider_ids for r in verdict.results]


# ---------------------------------------------------------------- Twilio


def test_twilio_sid_is_the_message_id() -> None:
    spec = response_spec(message_id="$.sid", error="$.message")
    response = json_response(
        201,
        {
            "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
            "account_sid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "status": "queued",
            "to": "+15558675310",
            "num_segments": "1",
            "error_code": None,
            "error_message": None,
        },
    )
    verdict = parse_send_response(spec, response, 1)
    assert outcomes(verdict) == [ACCEPTED]
    assert ids(verdict) == [("SM1f0e8ae6ade43cb3c0ce4525424e404f",)]
    assert verdict.results[0].error is None
    assert verdict.summary == "HTTP 201; accepted; 1 id"


def test_twilio_validation_error_is_rejected_with_its_message() -> None:
    spec = response_spec(message_id="$.sid", error="$.message")
    response = json_response(
        400,
        {
            "code": 21211,
            "message": "The 'To' number +1555 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        },
    )
    verdict = parse_send_response(spec, response, 1)
    assert outcomes(verdict) == [REJECTED]
    assert verdict.results[0].error == "The 'To' number +1555 is not a valid phone number."
    assert verdict.results[0].provider_ids == ()


# ---------------------------------------------------------------- Vonage


VONAGE = response_spec(
    success_when={"path": "$.messages[*].status", "equals": "0"},
    retry_when={"path": "$.messages[*].status", "equals": "1"},
    message_id="$.messages[*]['message-id']",
    error="$.messages[*]['error-text']",
)


def vonage_message(
    status: str, message_id: str | None = None, error: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"to": "447700900000", "status": status}
    if message_id:
        message.update(
            {
                "message-id": message_id,
                "remaining-balance": "3.14159265",
                "message-price": "0.03330000",
                "network": "23410",
                "client-ref": "ours-1",
            }
        )
    if error:
        message["error-text"] = error
    return message


def test_vonage_multipart_message_keeps_every_part_id() -> None:
    body = {
        "message-count": "2",
        "messages": [
            vonage_message("0", "0A0000001234567B"),
            vonage_message("0", "0A0000001234567C"),
        ],
    }
    verdict = parse_send_response(VONAGE, json_response(200, body), 1)
    assert outcomes(verdict) == [ACCEPTED]
    assert ids(verdict) == [("0A0000001234567B", "0A0000001234567C")]
    assert verdict.summary == "HTTP 200; accepted; 2 ids"


def test_vonage_throttled_in_a_200_body_is_retried() -> None:
    body = {
        "message-count": "1",
        "messages": [
            vonage_message("1", error="Throughput Rate Exceeded - please wait [ 30 ] and retry")
        ],
    }
    verdict = parse_send_response(VONAGE, json_response(200, body), 1)
    assert outcomes(verdict) == [RETRY]
    assert verdict.results[0].error == "Throughput Rate Exceeded - please wait [ 30 ] and retry"


def test_vonage_other_status_in_a_200_body_is_rejected() -> None:
    body = {"message-count": "1", "messages": [vonage_message("2", error="Missing to param")]}
    verdict = parse_send_response(VONAGE, json_response(200, body), 1)
    assert outcomes(verdict) == [REJECTED]
    assert verdict.results[0].error == "Missing to param"


def test_vonage_partly_failed_multipart_is_rejected_as_a_whole() -> None:
    body = {
        "message-count": "2",
        "messages": [vonage_message("0", "0A01"), vonage_message("4", error="Invalid credentials")],
    }
    verdict = parse_send_response(VONAGE, json_response(200, body), 1)
    assert outcomes(verdict) == [REJECTED]


# ---------------------------------------------------------------- batches


def test_plivo_uuids_are_matched_to_messages_by_position() -> None:
    spec = response_spec(message_id="$.message_uuid[*]")
    body = {
        "api_id": "0c6cc9a4-d8ff-11ee-a2a5-0242ac110003",
        "message": "message(s) queued",
        "message_uuid": [
            "db3ce55a-7f1d-11e1-8ea7-1231380bc196",
            "db3ce55a-7f1d-11e1-8ea7-1231380bc197",
        ],
    }
    verdict = parse_send_response(spec, json_response(202, body), 2)
    assert outcomes(verdict) == [ACCEPTED, ACCEPTED]
    assert ids(verdict) == [
        ("db3ce55a-7f1d-11e1-8ea7-1231380bc196",),
        ("db3ce55a-7f1d-11e1-8ea7-1231380bc197",),
    ]


def test_sinch_batch_id_is_shared_by_every_message() -> None:
    spec = response_spec(message_id="$.id")
    body = {
        "id": "01FC66621XXXXX119Z8PMV1QPQ",
        "to": ["44231235674", "44231235675", "44231235676"],
        "from": "Acme",
        "canceled": False,
        "body": "Hello",
        "type": "mt_text",
        "created_at": "2024-03-01T10:00:00.000Z",
    }
    verdict = parse_send_response(spec, json_response(201, body), 3)
    assert ids(verdict) == [("01FC66621XXXXX119Z8PMV1QPQ",)] * 3
    assert verdict.summary == "HTTP 201; 3 accepted; 1 id"


def test_8x8_batch_umids_by_position() -> None:
    spec = response_spec(message_id="$.messages[*].umid")
    body = {
        "batchId": "b1a2c3d4-0000-0000-0000-000000000001",
        "clientBatchId": "ours-batch-1",
        "acceptedCount": 2,
        "rejectedCount": 0,
        "messages": [
            {
                "umid": "u-1",
                "clientMessageId": "ours-1",
                "destination": "+6598765432",
                "encoding": "GSM7",
            },
            {
                "umid": "u-2",
                "clientMessageId": "ours-2",
                "destination": "+6598765433",
                "encoding": "GSM7",
            },
        ],
    }
    verdict = parse_send_response(spec, json_response(200, body), 2)
    assert ids(verdict) == [("u-1",), ("u-2",)]


def test_africas_talking_per_recipient_status_code_splits_the_batch() -> None:
    spec = response_spec(
        success_when={"path": "$.SMSMessageData.Recipients[*].statusCode", "in": [100, 101, 102]},
        message_id="$.SMSMessageData.Recipients[*].messageId",
        error="$.SMSMessageData.Recipients[*].status",
    )
    body = {
        "SMSMessageData": {
            "Message": "Sent to 1/2 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": 101,
                    "number": "+254711XXXYYY",
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": "ATPid_SampleTxnId123",
                },
                {
                    "statusCode": 403,
                    "number": "+254733YYYZZZ",
                    "status": "InvalidPhoneNumber",
                    "cost": "0",
                    "messageId": "None",
                },
            ],
        }
    }
    verdict = parse_send_response(spec, json_response(201, body), 2)
    assert outcomes(verdict) == [ACCEPTED, REJECTED]
    assert verdict.results[0].provider_ids == ("ATPid_SampleTxnId123",)
    assert verdict.results[1].error == "InvalidPhoneNumber"
    assert verdict.summary.startswith("HTTP 201; 1 accepted, 1 rejected")


def test_text_forms_of_numbers_compare_equal() -> None:
    spec = response_spec(success_when={"path": "$.code", "equals": "101"})
    assert outcomes(parse_send_response(spec, json_response(200, {"code": 101}), 1)) == [ACCEPTED]
    spec = response_spec(success_when={"path": "$.status", "equals": 0})
    assert outcomes(parse_send_response(spec, json_response(200, {"status": "0"}), 1)) == [ACCEPTED]


def test_textlocal_failure_in_a_200_is_rejected_with_the_error_messages() -> None:
    spec = response_spec(
        success_when={"path": "$.status", "equals": "success"},
        message_id="$.messages[*].id",
        error="$.errors[*].message",
    )
    failure = {"errors": [{"code": 4, "message": "No recipients specified"}], "status": "failure"}
    verdict = parse_send_response(spec, json_response(200, failure), 1)
    assert outcomes(verdict) == [REJECTED]
    assert verdict.results[0].error == "No recipients specified"
    success = {
        "balance": 1162,
        "batch_id": 123456789,
        "cost": 2,
        "num_messages": 2,
        "messages": [
            {"id": "1151346216", "recipient": 447123456789},
            {"id": "1151346217", "recipient": 447987654321},
        ],
        "status": "success",
    }
    verdict = parse_send_response(spec, json_response(200, success), 2)
    assert ids(verdict) == [("1151346216",), ("1151346217",)]


def test_batch_with_fewer_ids_than_messages_matches_by_position_and_says_so() -> None:
    spec = response_spec(message_id="$.messages[*].id")
    body = {"messages": [{"id": "a"}, {"id": "b"}]}
    verdict = parse_send_response(spec, json_response(200, body), 3)
    assert outcomes(verdict) == [ACCEPTED] * 3
    assert ids(verdict) == [("a",), ("b",), ()]
    assert "2 ids for 3 messages, matched by position" in verdict.summary
    assert "1 without id" in verdict.summary


def test_bulksms_root_array_ids() -> None:
    spec = response_spec(message_id="$[*].id")
    body = [
        {
            "id": "1001",
            "type": "SENT",
            "from": "Acme",
            "to": "27831234567",
            "body": "Hello",
            "encoding": "TEXT",
            "submission": {"id": "2-00000000001", "date": "2024-03-01T10:00:00Z"},
            "status": {"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": None},
            "userSuppliedId": "ours-1",
            "numberOfParts": 1,
            "creditCost": 1,
        },
        {"id": "1002", "type": "SENT", "to": "27831234568", "status": {"type": "ACCEPTED"}},
    ]
    verdict = parse_send_response(spec, json_response(201, body), 2)
    assert ids(verdict) == [("1001",), ("1002",)]


# ---------------------------------------------------------------- text, XML, headers


GUPSHUP = response_spec(
    success_when={"path": "$", "matches": r"^success"},
    message_id=r"re:^success \| [^|]+ \| (\S+)",
    error=r"re:^error \| \d+ \| (.+)$",
)


def test_gupshup_text_answer_with_a_regex_id() -> None:
    response = text_response(200, "success | 919812345678 | 3955130551476012345-257335225637528593")
    verdict = parse_send_response(GUPSHUP, response, 1)
    assert outcomes(verdict) == [ACCEPTED]
    assert ids(verdict) == [("3955130551476012345-257335225637528593",)]


def test_gupshup_text_error_is_rejected_with_its_text() -> None:
    verdict = parse_send_response(
        GUPSHUP, text_response(200, "error | 175 | The message is too long"), 1
    )
    assert outcomes(verdict) == [REJECTED]
    assert verdict.results[0].error == "The message is too long"


EXOTEL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<TwilioResponse>
 <SMSMessage>
  <Sid>b6aa8b6ba0ea8cd2e6a1a9f7e1d2c3a4</Sid>
  <AccountSid>acme1</AccountSid>
  <From>0XXXXXX4890/ACME</From>
  <To>0XXXXX30240</To>
  <DateCreated>2024-03-01 10:00:00</DateCreated>
  <DateSent/>
  <Body>Hello</Body>
  <Direction>outbound-api</Direction>
  <Status>queued</Status>
 </SMSMessage>
</TwilioResponse>
"""


def test_exotel_xml_answer_reads_like_xmltodict() -> None:
    spec = response_spec(
        success_when={
            "path": "$.TwilioResponse.SMSMessage.Status",
            "in": ["queued", "sending", "sent"],
        },
        message_id="$.TwilioResponse.SMSMessage.Sid",
    )
    verdict = parse_send_response(spec, text_response(200, EXOTEL_XML, "application/xml"), 1)
    assert outcomes(verdict) == [ACCEPTED]
    assert ids(verdict) == [("b6aa8b6ba0ea8cd2e6a1a9f7e1d2c3a4",)]


def test_xml_with_a_doctype_is_not_parsed() -> None:
    hostile = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        "<TwilioResponse><SMSMessage><Sid>&b;</Sid></SMSMessage></TwilioResponse>"
    )
    spec = response_spec(message_id="$.TwilioResponse.SMSMessage.Sid")
    body = decode_response_body(text_response(200, hostile, "text/xml"))
    assert body.format == "text"
    assert ids(parse_send_response(spec, text_response(200, hostile, "text/xml"), 1)) == [()]


def test_xml_attributes_repeats_and_namespaces() -> None:
    document = parse_xml_document(
        '<r xmlns="urn:x" id="1"><m n="a">one</m><m>two</m><m>three</m><empty/>tail</r>'
    )
    assert document == {
        "r": {"@id": "1", "m": [{"@n": "a", "#text": "one"}, "two", "three"], "empty": None}
    }


def test_location_header_as_message_id() -> None:
    spec = response_spec(message_id="header:location")
    response = HttpResponse(201, {"Location": "https://api.example.com/v1/messages/abc123"}, b"")
    assert ids(parse_send_response(spec, response, 1)) == [
        ("https://api.example.com/v1/messages/abc123",)
    ]


def test_json_sniffed_without_content_type() -> None:
    response = HttpResponse(200, {}, b' {"id": "x1"}')
    assert decode_response_body(response).document == {"id": "x1"}
    assert ids(parse_send_response(response_spec(message_id="$.id"), response, 1)) == [("x1",)]


def test_plain_text_document_is_the_text() -> None:
    response = text_response(200, "OK 12345")
    assert decode_response_body(response).document == "OK 12345"
    spec = response_spec(message_id=r"re:OK (\d+)", success_when={"path": "$", "matches": "^OK"})
    assert ids(parse_send_response(spec, response, 1)) == [("12345",)]


# ---------------------------------------------------------------- status and retries


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, ACCEPTED),
        (202, ACCEPTED),
        (207, ACCEPTED),
        (429, RETRY),
        (500, RETRY),
        (503, RETRY),
        (408, RETRY),
        (425, RETRY),
        (400, REJECTED),
        (401, REJECTED),
        (404, REJECTED),
        (302, REJECTED),
    ],
)
def test_default_status_classes(status: int, expected: SendOutcome) -> None:
    verdict = parse_send_response(Response(), json_response(status, {}), 1)
    assert outcomes(verdict) == [expected]
    assert verdict.status == status


def test_configured_success_codes_replace_the_default_class() -> None:
    spec = response_spec(success_status=[201])
    assert outcomes(parse_send_response(spec, json_response(200, {}), 1)) == [REJECTED]
    assert outcomes(parse_send_response(spec, json_response(201, {}), 1)) == [ACCEPTED]


def test_retry_when_applies_to_an_error_status_too() -> None:
    spec = response_spec(
        retry_when={"path": "$.requestError.serviceException.messageId", "equals": "E429"}
    )
    body = {
        "requestError": {"serviceException": {"messageId": "E429", "text": "Too many requests"}}
    }
    assert outcomes(parse_send_response(spec, json_response(400, body), 1)) == [RETRY]


def test_retry_after_seconds_is_reported() -> None:
    verdict = parse_send_response(Response(), json_response(429, {}, **{"Retry-After": "30"}), 2)
    assert outcomes(verdict) == [RETRY, RETRY]
    assert verdict.retry_after_seconds == 30
    assert "retry after 30s" in verdict.summary


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)
    response = json_response(503, {}, **{"Retry-After": "Fri, 01 Mar 2024 10:02:00 GMT"})
    verdict = parse_send_response(Response(), response, 1, now=now)
    assert verdict.retry_after_seconds == 120


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("-5", 0.0), ("soon", None), ("", None), ("Fri, 01 Mar 2024 09:00:00 GMT", 0.0)],
)
def test_retry_after_edge_values(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=datetime(2024, 3, 1, 10, 0, tzinfo=UTC)) == expected


def test_error_without_an_error_path_is_a_short_body_snippet() -> None:
    verdict = parse_send_response(Response(), text_response(400, "bad   request\n" + "x" * 500), 1)
    error = verdict.results[0].error
    assert error is not None
    assert error.startswith("HTTP 400: bad request xxx")
    assert len(error) == 200


def test_empty_error_body_is_described() -> None:
    verdict = parse_send_response(Response(), HttpResponse(502, {}, b""), 1)
    assert verdict.results[0].error == "HTTP 502 with an empty body"


def test_missing_success_value_is_not_success() -> None:
    spec = response_spec(success_when={"path": "$.status", "equals": "success"})
    verdict = parse_send_response(spec, json_response(200, {"other": 1}), 1)
    assert outcomes(verdict) == [REJECTED]
