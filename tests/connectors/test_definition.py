"""The connector definition: one schema for JSON and YAML, and errors a user can act on.

Every refusal names the field (a dotted path) and says what would be accepted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from smsrelay.connectors.definition import (
    ConnectorDefinition,
    load_definition,
    parse_definition,
)
from smsrelay.connectors.errors import DefinitionError
from smsrelay.connectors.placeholders import Placeholder, TemplateSyntaxError, parse_template

YAML_DOC = """
name: acme-8x8
request:
  url: https://sms.8x8.com/api/v1/subaccounts/{{secret.subaccount}}/messages
  headers: {Authorization: "Bearer {{secret.api_key}}"}
  body:
    json: {source: "{{sender}}", destination: "{{to}}", text: "{{body}}", encoding: AUTO}
response:
  message_id: $.umid
secrets: {api_key: k3y, subaccount: acme}
"""

BASE: dict[str, Any] = {
    "name": "acme",
    "request": {
        "url": "https://sms.example.com/send",
        "body": {"json": {"to": "{{to}}", "text": "{{body}}"}},
    },
}


def errors_of(change: Callable[[dict[str, Any]], object]) -> list[tuple[str, str]]:
    """The (path, message) pairs refused for BASE after `change` (which edits it in place)."""
    document = copy.deepcopy(BASE)
    change(document)
    with pytest.raises(DefinitionError) as refused:
        parse_definition(document)
    return [(e.path, e.message) for e in refused.value.errors]


def with_batch(batch: dict[str, Any], body: dict[str, Any] | None = None) -> Callable[..., None]:
    """An edit adding `batch` (and replacing the request body if given)."""

    def change(document: dict[str, Any]) -> None:
        document["batch"] = batch
        if body is not None:
            document["request"]["body"] = body

    return change


# ---------------------------------------------------------------- loading


def test_yaml_and_json_documents_load_to_the_same_definition() -> None:
    from_yaml = load_definition(YAML_DOC)
    from_json = load_definition(json.dumps(from_yaml.export(mask_secrets=False)))
    assert from_yaml == from_json
    assert from_yaml.request.body.type == "json"  # inferred from the `json` key
    assert from_yaml.request.body.json_template["encoding"] == "AUTO"


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(DefinitionError) as refused:
        load_definition("- one\n- two\n")
    assert str(refused.value) == "a connector definition is a mapping (object), got list"


def test_broken_yaml_reports_line_and_column() -> None:
    with pytest.raises(DefinitionError) as refused:
        load_definition("name: x\nrequest: [\n")
    assert refused.value.errors[0].message.startswith("not valid JSON or YAML at line 3, column 1")


def test_unquoted_yaml_numbers_and_booleans_become_template_text() -> None:
    definition = load_definition(
        "name: t\nrequest:\n  url: https://x.example/s\n"
        "  query: {to: '{{to}}', msg: '{{body}}', v: 1.1, flash: true, port: 0}\n"
    )
    assert definition.request.query == {
        "to": "{{to}}",
        "msg": "{{body}}",
        "v": "1.1",
        "flash": "true",
        "port": "0",
    }


def test_export_masks_secrets_unless_asked_not_to() -> None:
    definition = load_definition(YAML_DOC)
    assert definition.export()["secrets"] == {"api_key": "***", "subaccount": "***"}
    assert definition.export(mask_secrets=False)["secrets"] == {
        "api_key": "k3y",
        "subaccount": "acme",
    }
    assert "k3y" not in json.dumps(definition.export())


def test_export_uses_the_keys_a_user_writes() -> None:
    exported = load_definition(YAML_DOC).export()
    assert "json" in exported["request"]["body"]
    assert "json_template" not in exported["request"]["body"]
    reloaded = parse_definition({**exported, "secrets": {"api_key": "a", "subaccount": "b"}})
    assert isinstance(reloaded, ConnectorDefinition)


# ---------------------------------------------------------------- placeholders


def test_aliases_parse_to_canonical_names() -> None:
    template = parse_template("$$To $$Body Moesms_message $$first_name {{ params.x }}")
    assert template.placeholders == (
        Placeholder("to"),
        Placeholder("body"),
        Placeholder("body"),
        Placeholder("params.first_name"),
        Placeholder("params.x"),
    )


def test_dollar_signs_and_single_braces_are_literal_text() -> None:
    template = parse_template("Price: $$5 {not a placeholder}")
    assert template.is_literal


def test_unknown_placeholder_suggests_the_closest_name() -> None:
    assert errors_of(lambda d: d["request"]["body"]["json"].update(text="{{bdy}}")) == [
        ("request.body.json.text", "unknown placeholder {{bdy}}; did you mean {{body}}?")
    ]


def test_misspelt_prefix_suggests_params_or_secret() -> None:
    with pytest.raises(TemplateSyntaxError, match=r"did you mean \{\{params\.name\}\}\?"):
        parse_template("{{param.name}}")
    with pytest.raises(TemplateSyntaxError, match=r"did you mean \{\{secret\.key\}\}\?"):
        parse_template("{{secrets.key}}")


def test_unknown_placeholder_without_a_close_match_lists_the_known_ones() -> None:
    [(path, message)] = errors_of(lambda d: d["request"]["body"]["json"].update(x="{{zzqq}}"))
    assert path == "request.body.json.x"
    assert message.startswith("unknown placeholder {{zzqq}}; known: {{body}}, ")
    assert message.endswith("{{params.NAME}}, {{secret.NAME}}")


def test_unbalanced_braces_are_refused() -> None:
    assert errors_of(lambda d: d["request"]["body"]["json"].update(text="{{body}")) == [
        (
            "request.body.json.text",
            "unbalanced braces: a placeholder is written {{name}} with two braces on each side",
        )
    ]


def test_a_connector_must_use_the_recipient() -> None:
    assert errors_of(lambda d: d["request"]["body"]["json"].pop("to")) == [
        (
            "request",
            "the connector never uses the recipient: put {{to}} (or $$To, Moesms_destination) "
            "in the URL, query, body or batch item",
        )
    ]


def test_a_connector_must_use_the_body_or_a_template_id() -> None:
    assert errors_of(lambda d: d["request"]["body"]["json"].pop("text")) == [
        (
            "request",
            "the connector never uses the message: put {{body}} (or $$Body, Moesms_message) "
            "or {{template_id}} in the URL, query, body or batch item",
        )
    ]
    only_template = copy.deepcopy(BASE)
    only_template["request"]["body"]["json"]["text"] = "$$TemplateID"
    assert parse_definition(only_template).request.body.json_template["text"] == "$$TemplateID"


def test_an_undefined_secret_is_named_with_the_defined_ones() -> None:
    def change(document: dict[str, Any]) -> None:
        document["request"]["headers"] = {"X-Key": "{{secret.key}}"}
        document["secrets"] = {"token": "t"}

    assert errors_of(change) == [
        (
            "request.headers.X-Key",
            "secret 'key' is not defined; add it under secrets (defined: token)",
        )
    ]


# ---------------------------------------------------------------- schema


def test_unknown_key_suggests_a_key_valid_at_that_place() -> None:
    assert errors_of(lambda d: d["request"].update(bdy={})) == [
        ("request.bdy", "unknown key 'bdy'; did you mean 'body'?")
    ]
    assert errors_of(lambda d: d.update(secret={})) == [
        ("secret", "unknown key 'secret'; did you mean 'secrets'?")
    ]


def test_unknown_key_inside_a_tagged_auth_is_placed_under_auth() -> None:
    auth = {"type": "basic", "username": "{{secret.u}}", "pasword": "x"}
    assert errors_of(lambda d: d["request"].update(auth=auth)) == [
        ("request.auth.password", "is required"),
        ("request.auth.pasword", "unknown key 'pasword'; did you mean 'password'?"),
    ]


def test_unknown_auth_type_lists_the_accepted_types() -> None:
    assert errors_of(lambda d: d["request"].update(auth={"type": "digest"})) == [
        ("request.auth", "unknown type 'digest'; accepted: 'none', 'basic', 'bearer', 'oauth2'")
    ]


def test_auth_fields_take_only_secret_placeholders() -> None:
    def change(document: dict[str, Any]) -> None:
        document["request"]["auth"] = {
            "type": "basic",
            "username": "{{to}}",
            "password": "{{secret.p}}",
        }
        document["secrets"] = {"p": "x"}

    assert errors_of(change) == [
        (
            "request.auth.username",
            "only {{secret.NAME}} placeholders are allowed here, not {{to}}",
        )
    ]


def test_invalid_name_says_what_a_name_is() -> None:
    assert errors_of(lambda d: d.update(name="Bad Name")) == [
        (
            "name",
            "'Bad Name' is not a valid name: use 1-64 characters a-z, 0-9, _ or -, "
            "starting with a letter or digit",
        )
    ]


def test_url_must_be_http_or_start_with_a_secret() -> None:
    assert errors_of(lambda d: d["request"].update(url="ftp://x.example/send")) == [
        ("request.url", "must start with http:// or https:// (got 'ftp://x.example/send')")
    ]
    document = copy.deepcopy(BASE)
    document["request"]["url"] = "{{secret.base_url}}/sms/2/text/advanced"
    document["secrets"] = {"base_url": "https://abc.api.example.com"}
    assert parse_definition(document).request.url.startswith("{{secret.base_url}}")


def test_method_must_be_an_http_verb() -> None:
    [(path, message)] = errors_of(lambda d: d["request"].update(method="fetch"))
    assert path == "request.method"
    assert message == "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE' (got 'FETCH')"


def test_bad_status_codes_are_all_reported() -> None:
    assert errors_of(lambda d: d.update(response={"success_status": [700, "2xxx", "201"]})) == [
        (
            "response.success_status",
            "status code 700 is not between 100 and 599; "
            "'2xxx' is not a status code (e.g. 202) or class (e.g. 2xx)",
        )
    ]
    document = copy.deepcopy(BASE)
    document["response"] = {"success_status": ["2xx", "201", 207], "retry_status": 429}
    response = parse_definition(document).response
    assert (response.success_status, response.retry_status) == (["2xx", 201, 207], [429])


def test_bad_jsonpath_is_refused_at_its_field() -> None:
    [(path, message)] = errors_of(lambda d: d.update(response={"message_id": "$.["}))
    assert path == "response.message_id"
    assert message.startswith("invalid JSONPath '$.['")


def test_predicate_needs_exactly_one_test() -> None:
    change = lambda d: d.update(response={"success_when": {"path": "$.ok"}})  # noqa: E731
    assert errors_of(change) == [
        ("response.success_when", "give exactly one of equals, in or matches")
    ]


def test_invalid_regular_expression_is_refused() -> None:
    change = lambda d: d.update(  # noqa: E731
        response={"success_when": {"path": "$.a", "matches": "("}}
    )
    [(path, message)] = errors_of(change)
    assert path == "response.success_when.matches"
    assert message.startswith("invalid regular expression: missing ), unterminated subpattern")


def test_delivery_fields_must_be_jsonpaths() -> None:
    change = lambda d: d.update(delivery={"message_id": "$.id", "status": "re:DELIVRD"})  # noqa: E731
    assert errors_of(change) == [
        (
            "delivery.status",
            "must be a JSONPath such as $.status (re: and header: are for responses)",
        )
    ]


def test_body_type_and_its_content_must_agree() -> None:
    assert errors_of(lambda d: d["request"]["body"].update(type="form")) == [
        ("request.body.form", "is required when body type is form"),
        ("request.body.json", "is not used when body type is form; set type: json or remove it"),
    ]
    assert errors_of(lambda d: d["request"]["body"].update(escape="xml")) == [
        ("request.body.escape", "applies to raw bodies only")
    ]


# ---------------------------------------------------------------- batch rules


FORM_BODY = {"form": {"to": "{{to}}", "text": "{{body}}"}}


def test_batch_items_needs_an_item_and_a_json_body() -> None:
    assert errors_of(with_batch({"mode": "items"})) == [
        ("batch.item", "is required for mode items (the template of one list element)")
    ]
    assert errors_of(with_batch({"mode": "items", "item": {"to": "{{to}}"}}, FORM_BODY)) == [
        ("batch.mode", "items needs a JSON body; form and query sends take mode values or join")
    ]


def test_batch_values_and_join_need_a_value_and_not_an_item() -> None:
    assert errors_of(with_batch({"mode": "values", "path": "to"})) == [
        ("batch.value", 'is required for mode values (e.g. "{{to}}")')
    ]
    batch = {"mode": "join", "path": "to", "value": "{{to}}", "item": {"to": "{{to}}"}}
    assert errors_of(with_batch(batch)) == [
        ("batch.item", "is not used with mode join; use batch.value")
    ]


def test_batch_join_needs_a_delimiter() -> None:
    batch = {"mode": "join", "path": "to", "value": "{{to}}", "delimiter": ""}
    assert errors_of(with_batch(batch)) == [("batch.delimiter", "must not be empty")]


def test_batch_on_a_form_body_names_its_field() -> None:
    batch = {"mode": "join", "path": "", "value": "{{to}}"}
    assert errors_of(with_batch(batch, FORM_BODY)) == [
        ("batch.path", "names the form field or query parameter that carries the list")
    ]


def test_batch_list_in_a_raw_body_is_refused() -> None:
    batch = {"mode": "values", "path": "to", "value": "{{to}}"}
    assert errors_of(with_batch(batch, {"raw": "{{to}} {{body}}"})) == [
        ("batch.mode", "values cannot place a list in a raw body")
    ]


def test_batch_root_list_leaves_no_room_for_other_body_keys() -> None:
    batch = {"mode": "items", "path": "", "item": {"to": "{{to}}"}}
    assert errors_of(with_batch(batch)) == [
        (
            "batch.path",
            "is empty, so the body is the list itself; remove request.body.json keys or set a path",
        )
    ]


def test_batch_path_cannot_cross_a_non_object() -> None:
    def change(document: dict[str, Any]) -> None:
        document["request"]["body"]["json"]["meta"] = "x"
        document["batch"] = {"mode": "values", "path": "meta.to", "value": "{{to}}"}

    assert errors_of(change) == [
        ("batch.path", "'meta.to' crosses a non-object value in request.body.json")
    ]
