"""Value paths: JSONPath, `re:`, `header:` and `^` for the object enclosing a report."""

from __future__ import annotations

import pytest

from smsrelay.connectors.paths import PathSyntaxError, compile_value_path, key_segment, list_fields

MSG91 = {"data": [{"requestId": "r-1", "report": [{"number": "91999", "status": "1"}]}]}


def test_dotted_shorthand_reads_like_jsonpath() -> None:
    document = {"payload": {"status": {"state": "delivered"}}}
    assert compile_value_path("payload.status.state").find(document) == ["delivered"]
    assert compile_value_path("$.payload.status.state").find(document) == ["delivered"]


def test_wildcards_and_quoted_names() -> None:
    document = {"messages": [{"message-id": "a"}, {"message-id": "b"}]}
    path = compile_value_path("$.messages[*]['message-id']")
    assert path.find(document) == ["a", "b"]
    assert not path.is_singular


def test_regex_path_takes_group_one_or_the_match() -> None:
    assert compile_value_path(r"re:id=(\w+)").find(None, text="ok id=abc id=def") == ["abc", "def"]
    assert compile_value_path(r"re:\d+").find("call 123") == ["123"]


def test_header_path_ignores_case() -> None:
    assert compile_value_path("header:location").find(None, headers={"Location": "/m/1"}) == [
        "/m/1"
    ]
    assert compile_value_path("header:location").find(None) == []


def test_root_of_a_text_document_is_the_text_not_parsed_json() -> None:
    assert compile_value_path("$").find("12345") == ["12345"]
    assert compile_value_path("$.id").find('{"id": 1}') == []


def test_parent_steps_climb_to_enclosing_objects_skipping_arrays() -> None:
    [report] = compile_value_path("$.data[*].report[*]").matches(MSG91)
    assert compile_value_path("^.requestId", allow_parent=True).find_from(report) == ["r-1"]
    assert compile_value_path("^^.data[0].requestId", allow_parent=True).find_from(report) == [
        "r-1"
    ]
    assert compile_value_path("^^^.anything", allow_parent=True).find_from(report) == []
    assert compile_value_path("number", allow_parent=True).find_from(report) == ["91999"]


def test_scalar_reports_are_reachable_with_dollar() -> None:
    document = {"batch_id": "B", "statuses": [{"status": "Delivered", "recipients": ["4477"]}]}
    [report] = compile_value_path("$.statuses[*].recipients[*]").matches(document)
    assert compile_value_path("$", allow_parent=True).find_from(report) == ["4477"]
    assert compile_value_path("^.status", allow_parent=True).find_from(report) == ["Delivered"]
    assert compile_value_path("^^.batch_id", allow_parent=True).find_from(report) == ["B"]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "is empty"),
        ("re:(", "invalid regular expression"),
        ("header:", "needs a header name"),
        ("^.id", "only allowed in delivery report fields"),
        ("$.a[", "invalid JSONPath"),
    ],
)
def test_bad_paths_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(PathSyntaxError, match=message):
        compile_value_path(expr)


@pytest.mark.parametrize(
    ("key", "segment"),
    [(0, "[0]"), ("id", ".id"), ("message-id", "['message-id']"), ("it's", '["it\'s"]')],
)
def test_key_segments(key: str | int, segment: str) -> None:
    assert key_segment(key) == segment


def test_list_fields_paths_read_back_their_values() -> None:
    document = {"a": {"b c": [1, {"d": None}]}, "e": [], "f": "x"}
    fields = list_fields(document)
    assert fields == [("$.a['b c'][0]", 1), ("$.a['b c'][1].d", None), ("$.e", []), ("$.f", "x")]
    for path, value in fields:
        assert compile_value_path(path).find(document) == [value]
