"""The fast path for plain JSON answers (one message or a batch) decides exactly as the
general path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsrelay.connectors.definition import Response
from smsrelay.connectors.exchange import HttpResponse
from smsrelay.connectors.responses import (
    _general_verdict,
    _plain_json_answer,
    parse_send_response,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

ids = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["p1", " p2 ", "", "  ", "SM1f0e8ae6ade43cb3c0ce4525424e404f"]),
    st.integers(-5, 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    ids,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "a", "b", "messages", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
small_ids = st.sampled_from(["p1", " p1", "p2 ", "", " ", 7, None, True])
documents = st.one_of(
    st.fixed_dictionaries(
        {"id": small_ids, "messages": st.lists(st.fixed_dictionaries({"id": small_ids}))}
    ),
    st.dictionaries(st.sampled_from(["id", "a", "messages", "status"]), json_values, max_size=4),
    st.lists(json_values, max_size=3),
    json_values,
)
message_id_paths = st.sampled_from(
    [
        None,
        "$.id",
        "id",
        "$.a.id",
        "$.a.b",
        "$.messages[*].id",
        "$[*].id",
        "$.messages[*]",
        "$",
        "$.messages[0].id",
        "header:X-Id",
        're:"id":"(\\w+)"',
        "$[",
    ]
)
statuses = st.sampled_from([200, 201, 202, 204, 299, 301, 400, 404, 408, 425, 429, 500, 503])
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF8",
        'application/json; charset="latin-1"',
        "application/json; charset=bogus",
        "text/plain",
        "text/xml",
    ]
)
retry_afters = st.sampled_from(
    [None, "", "5", " 2.5 ", "-3", "nan", "abc", "Wed, 03 Dec 2026 10:00:30 GMT"]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(documents), ensure_ascii=draw(st.booleans()))
    text = draw(
        st.sampled_from(
            [
                text,
                " " + text,
                text + "\n",
                text + " x",
                text[:-1],
                "OK " + text,
                "<r><id>1</id></r>",
            ]
        )
    )
    encoded = text.encode("utf-8")
    if draw(st.booleans()):
        encoded += draw(st.sampled_from([b"", b"\xff", b"\xc3\xa9"]))
    return encoded


@st.composite
def specs(draw: st.DrawFn) -> Response:
    fields: dict[str, Any] = {}
    if (path := draw(message_id_paths)) is not None:
        fields["message_id"] = path
    if draw(st.booleans()):
        fields["success_status"] = draw(
            st.sampled_from([[200], ["2xx"], [201, 202], ["2xx", 301], [200, "4xx"]])
        )
    if draw(st.integers(0, 4)) == 0:
        fields["success_when"] = {"path": "$.status", "equals": "ok"}
    if draw(st.integers(0, 4)) == 0:
        fields["retry_when"] = {"path": "$.status", "in": ["busy"]}
    if draw(st.booleans()):
        fields["error"] = "$.error"
    return Response.model_validate(fields)


@st.composite
def responses(draw: st.DrawFn) -> HttpResponse:
    headers: dict[str, str] = {}
    content_type = draw(content_types)
    if content_type is not None:
        headers[draw(st.sampled_from(["Content-Type", "content-type"]))] = content_type
    if (retry_after := draw(retry_afters)) is not None:
        headers[draw(st.sampled_from(["Retry-After", "retry-after"]))] = retry_after
    if draw(st.booleans()):
        # a second spelling of a name: the first one counts, as `HttpResponse.header` reads
        headers["CONTENT-TYPE"] = "text/plain; charset=latin-1"
        headers["RETRY-AFTER"] = "7"
    headers["X-Id"] = "hdr-1"
    return HttpResponse(status=draw(statuses), headers=headers, body=draw(bodies()))


@settings(max_examples=600, deadline=None)
@given(spec=specs(), response=responses(), count=st.sampled_from([0, 1, 2, 3, 5]))
@example(
    spec=Response.model_validate({"message_id": "$.id"}),
    response=HttpResponse(200, {"Content-Type": "application/json"}, b'{"id":" p1 "}'),
    count=1,
)
@example(
    spec=Response.model_validate({"message_id": "$.id"}),
    response=HttpResponse(200, {"Content-Type": "application/json"}, b'{"id":"p1"} x'),
    count=1,
)
@example(
    spec=Response.model_validate({"message_id": "$.messages[*].id"}),
    response=HttpResponse(200, {}, b'{"messages":[{"id":"a"},{"id":"a"},{"id":"b"}]}'),
    count=1,
)
@example(
    spec=Response.model_validate({"message_id": "$.messages[*].id"}),
    response=HttpResponse(200, {}, b'{"messages":[{"id":"a"},{"id":""},{"id":"b"}]}'),
    count=2,
)
@example(
    spec=Response.model_validate({"message_id": "$.id"}),
    response=HttpResponse(200, {}, b'{"id":"shared"}'),
    count=3,
)
def test_parse_send_response_equals_the_general_path(
    spec: Response, response: HttpResponse, count: int
) -> None:
    assert parse_send_response(spec, response, count, now=NOW) == _general_verdict(
        spec, response, count, now=NOW
    )


@settings(max_examples=300, deadline=None)
@given(spec=specs(), response=responses(), count=st.sampled_from([1, 2, 3]))
def test_fast_path_verdicts_equal_the_general_path(
    spec: Response, response: HttpResponse, count: int
) -> None:
    fast = _plain_json_answer(spec, response, count, NOW)
    if fast is not None:
        assert fast == _general_verdict(spec, response, count, now=NOW)


def test_common_answers_take_the_fast_path() -> None:
    """The shapes the fast path is for do take it (else the tests above prove nothing)."""
    plain = Response.model_validate({"message_id": "$.id"})
    nested = Response.model_validate({"message_id": "$.messages[*].id", "success_status": 201})
    answers = [
        (plain, HttpResponse(200, {"Content-Type": "application/json"}, b'{"id":"p1"}')),
        (plain, HttpResponse(202, {"content-type": "application/json; charset=utf-8"}, b"{}")),
        (nested, HttpResponse(201, {}, b'{"messages":[{"id":"a"},{"id":"b"}]}')),
        (plain, HttpResponse(200, {"Retry-After": "3"}, b'{"id": 17}\n')),
    ]
    for spec, response in answers:
        for count in (1, 2, 3):
            fast = _plain_json_answer(spec, response, count, NOW)
            assert fast is not None
            assert fast == _general_verdict(spec, response, count, now=NOW)
    verdict = parse_send_response(plain, answers[0][1], 1, now=NOW)
    assert verdict.results[0].provider_ids == ("p1",)
    assert verdict.summary == "HTTP 200; accepted; 1 id"
    batch = parse_send_response(nested, answers[2][1], 2, now=NOW)
    assert [r.provider_ids for r in batch.results] == [("a",), ("b",)]
    assert batch.summary == "HTTP 201; 2 accepted; 2 ids"
    short = parse_send_response(nested, answers[2][1], 3, now=NOW)
    assert [r.provider_ids for r in short.results] == [("a",), ("b",), ()]
    assert short.summary == (
        "HTTP 201; 3 accepted; 2 ids; 2 ids for 3 messages, matched by position; 1 without id"
    )


def test_other_answers_leave_the_fast_path() -> None:
    plain = Response.model_validate({"message_id": "$.id"})
    predicate = Response.model_validate(
        {"message_id": "$.id", "success_when": {"path": "$.ok", "equals": True}}
    )
    json_ok = HttpResponse(200, {"Content-Type": "application/json"}, b'{"id":"p1"}')
    assert _plain_json_answer(predicate, json_ok, 1, NOW) is None
    assert _plain_json_answer(plain, HttpResponse(500, {}, b'{"id":"p1"}'), 1, NOW) is None
    assert _plain_json_answer(plain, HttpResponse(200, {}, b"OK p1"), 1, NOW) is None
    latin = HttpResponse(200, {"Content-Type": "application/json; charset=latin-1"}, b"{}")
    assert _plain_json_answer(plain, latin, 1, NOW) is None
