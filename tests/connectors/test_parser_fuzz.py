"""Whatever a provider (or anyone) sends, the parsers answer with data or a CallbackError."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsrelay.connectors.definition import Delivery, Response, parse_definition
from smsrelay.connectors.delivery import (
    decode_callback,
    list_fields,
    parse_delivery_callback,
    suggest_delivery_mapping,
)
from smsrelay.connectors.errors import CallbackError, DefinitionError
from smsrelay.connectors.exchange import (
    DeliveryReport,
    HttpResponse,
    InboundCallback,
    SendOutcome,
)
from smsrelay.connectors.paths import compile_value_path
from smsrelay.connectors.responses import parse_send_response

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["delivered", "DELIVRD", "1", "m-1", "447700900123", '{"id": "x"}', "[1]"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "status", "results", "data", "report", "to", "messageId", "x-y"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)

content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "text/plain; charset=nope",
        "text/xml",
        "application/pdf",
        "multipart/form-data; boundary=\r\nX-Injected: 1",
    ]
)

query_pairs = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4)


def specs() -> list[Delivery]:
    mappings: list[dict[str, Any]] = [
        {"reports": "$.results[*]", "message_id": "messageId", "status": "status.name"},
        {
            "decode": ["data"],
            "reports": "$.data[*].report[*]",
            "message_id": "^.requestId",
            "recipient": "number",
            "status": "status",
        },
        {
            "reports": "$.statuses[*].recipients[*]",
            "message_id": "^^.batch_id",
            "recipient": "$",
            "status": "^.status",
            "delivered": ["re:^deliv"],
        },
        {"decode": ["$..Message"], "message_id": "id", "status": "status", "timestamp": "$..ts"},
        {"reports": "$[*]", "message_id": "id", "status": "status", "failed": ["re:."]},
    ]
    return [connector_delivery(m) for m in mappings]


def connector_delivery(mapping: dict[str, Any]) -> Delivery:
    definition = parse_definition(
        {
            "name": "fuzz",
            "request": {
                "url": "https://x.example/send",
                "body": {"form": {"to": "{{to}}", "text": "{{body}}"}},
            },
            "delivery": mapping,
        }
    )
    assert definition.delivery is not None
    return definition.delivery


SPECS = specs()


def assert_reports(reports: list[DeliveryReport]) -> None:
    for report in reports:
        assert isinstance(report.key, str) and report.key
        assert isinstance(report.raw_status, str)


callback_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"[" * 50_000,
            b'{"a":' * 900 + b"1" + b"}" * 900,
            b'{"Message": "' + b"[" * 3000 + b'"}',
            b"<a>" * 3000 + b"</a>" * 3000,
            b"data=%5B%7B%22report%22%3A1%7D%5D",
        ]
    ),
)


@FUZZ
@given(
    body=callback_bodies,
    content_type=content_types,
    method=st.sampled_from(["GET", "POST"]),
    query=query_pairs,
)
def test_arbitrary_bytes_decode_or_raise_callback_error(
    body: bytes, content_type: str | None, method: str, query: list[tuple[str, str]]
) -> None:
    callback = InboundCallback(
        method, "https://relay.example/dlr/t", tuple(query), {}, body, content_type
    )
    for spec in SPECS:
        try:
            decode_callback(callback, spec.decode)
            assert_reports(parse_delivery_callback(spec, callback))
        except CallbackError as exc:
            assert str(exc)


@FUZZ
@given(document=json_values, spec_index=st.integers(0, len(SPECS) - 1), as_form=st.booleans())
def test_arbitrary_json_parses_or_raises_callback_error(
    document: Any, spec_index: int, as_form: bool
) -> None:
    if as_form:
        body = urlencode({"data": json.dumps(document)}).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(document).encode()
        content_type = "application/json"
    callback = InboundCallback("POST", "https://relay.example/dlr/t", (), {}, body, content_type)
    try:
        assert_reports(parse_delivery_callback(SPECS[spec_index], callback))
    except CallbackError as exc:
        assert str(exc)


@FUZZ
@given(document=json_values)
def test_every_listed_field_path_reads_back_its_value(document: Any) -> None:
    for path, value in list_fields(document):
        assert value in compile_value_path(path).find(document)


@FUZZ
@given(document=json_values.filter(lambda d: isinstance(d, dict | list)))
def test_suggestions_never_raise_and_valid_ones_read_their_sample(document: Any) -> None:
    suggestion = suggest_delivery_mapping(document)
    assert "reports" in suggestion
    if "message_id" not in suggestion or "status" not in suggestion:
        return
    try:
        spec = connector_delivery(suggestion)
    except DefinitionError:
        return  # e.g. a key name that is not a valid path; the user edits the proposal
    callback = InboundCallback(
        "POST",
        "https://relay.example/dlr/t",
        (),
        {},
        json.dumps(document).encode(),
        "application/json",
    )
    with contextlib.suppress(CallbackError):
        assert_reports(parse_delivery_callback(spec, callback))


RESPONSE_SPECS = [
    Response(),
    Response.model_validate(
        {
            "success_when": {"path": "$.messages[*].status", "equals": "0"},
            "retry_when": {"path": "$.messages[*].status", "equals": "1"},
            "message_id": "$.messages[*]['message-id']",
            "error": "$.messages[*]['error-text']",
        }
    ),
    Response.model_validate(
        {
            "success_when": {"path": "$", "matches": "^success"},
            "message_id": r"re:^success \| [^|]+ \| (\S+)",
            "error": "re:(.+)",
        }
    ),
    Response.model_validate(
        {
            "success_when": {"path": "$..statusCode", "in": [101, "102"]},
            "message_id": "$..messageId",
        }
    ),
    Response.model_validate({"message_id": "header:Location", "error": "$.error"}),
    Response.model_validate({"message_id": "$.TwilioResponse.SMSMessage.Sid"}),
]

response_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b"<a><b>1</b><b>2</b></a>",
            b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
            b"<a",
            b"success | 1 | 2",
            b"\xff\xfe{",
            b"[" * 5000,
        ]
    ),
)


@FUZZ
@given(
    body=response_bodies,
    status=st.integers(100, 599),
    content_type=st.sampled_from(
        ["application/json", "text/xml", "text/plain", "", "text/html; charset=x"]
    ),
    retry_after=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.sampled_from(["30", "Wed, 21 Oct 2015 07:28:00 GMT", "1e999", "nan"]),
    ),
    count=st.integers(1, 5),
    spec_index=st.integers(0, len(RESPONSE_SPECS) - 1),
)
def test_send_response_parsing_never_raises(
    body: bytes,
    status: int,
    content_type: str,
    retry_after: str | None,
    count: int,
    spec_index: int,
) -> None:
    headers = {"Content-Type": content_type, "Location": "/m/1"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    verdict = parse_send_response(
        RESPONSE_SPECS[spec_index], HttpResponse(status, headers, body), count
    )
    assert len(verdict.results) == count
    assert verdict.summary.startswith(f"HTTP {status}")
    for result in verdict.results:
        assert isinstance(result.outcome, SendOutcome)
        assert (result.error is None) == (result.outcome is SendOutcome.ACCEPTED)
        assert result.error is None or len(result.error) <= 200
    assert verdict.retry_after_seconds is None or verdict.retry_after_seconds >= 0
