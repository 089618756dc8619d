"""Rendering a connector: values, errors, typing, escaping, auth and batching (SPEC §2)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from smsrelay.connectors import placeholders, rendering
from smsrelay.connectors.definition import ConnectorDefinition, parse_definition
from smsrelay.connectors.errors import MissingParameter, RenderError
from smsrelay.connectors.exchange import HttpRequest, OutboundMessage
from smsrelay.connectors.rendering import (
    CompiledConnector,
    RenderEnvironment,
    batch_key,
    compile_connector,
    render_batch,
    render_request,
)

ENV = RenderEnvironment(secrets={"key": "s3cret"}, callback_url="https://relay.example/dlr/t1")
MESSAGE = OutboundMessage(
    message_id="m-1",
    to="+4915112345678",
    body="Hello Anna",
    sender="ACME",
    params={"first_name": "Anna", "code": "4711"},
)


def connector(request: dict[str, Any], **rest: Any) -> CompiledConnector:
    """Compile a connector whose request section is `request` (url defaulted)."""
    document: dict[str, Any] = {
        "name": "test",
        "request": {"url": "https://sms.example.com/send", **request},
        "secrets": {"key": "s3cret"},
        **rest,
    }
    return compile_connector(parse_definition(document))


def json_connector(template: dict[str, Any], **request: Any) -> CompiledConnector:
    """A connector with a JSON body template."""
    return connector({"body": {"json": template}, **request})


def render_one(
    compiled: CompiledConnector, message: OutboundMessage = MESSAGE, env: RenderEnvironment = ENV
) -> HttpRequest:
    """Render a single message."""
    return render_request(compiled, [message], env)


def body_json(request: HttpRequest) -> Any:
    """The request body parsed as JSON."""
    return json.loads(request.body)


def message(n: int, **fields: Any) -> OutboundMessage:
    """Message number n to a distinct recipient, same body and sender unless given."""
    values: dict[str, Any] = {
        "message_id": f"m-{n}",
        "to": f"+49151123456{n:02d}",
        "body": "Your code",
        "sender": "ACME",
    }
    values.update(fields)
    return OutboundMessage(**values)


# ---------------------------------------------------------------- values and missing values


def test_missing_custom_parameter_fails_with_its_name_and_field() -> None:
    compiled = json_connector({"to": "{{to}}", "text": "Hi {{params.last_name}}: {{body}}"})
    with pytest.raises(MissingParameter) as failed:
        render_one(compiled)
    assert failed.value.reason == "missing_parameter:params.last_name"
    assert str(failed.value) == (
        "no value for placeholder {{params.last_name}} in request.body.json.text"
    )


@pytest.mark.parametrize(
    ("template", "body", "reason"),
    [
        ("{{body}}", None, "missing_parameter:body"),
        ("{{segments}}", None, "missing_parameter:body"),  # derived from the body
        ("{{template_id}}", "b", "missing_parameter:template_id"),
        ("{{secret.other}}", "b", "missing_parameter:secret.other"),
    ],
)
def test_values_a_message_lacks_are_missing_parameters(
    template: str, body: str | None, reason: str
) -> None:
    document = {
        "name": "t",
        "request": {
            "url": "https://sms.example.com/send",
            "body": {"json": {"to": "{{to}}", "x": template, "text": "{{body}}"}},
        },
        "secrets": {"other": "defined in the document, absent at render time"},
    }
    compiled = compile_connector(parse_definition(document))
    sent = OutboundMessage(message_id="m-1", to="+4915112345678", body=body)
    with pytest.raises(MissingParameter) as failed:
        render_request(compiled, [sent], RenderEnvironment(secrets={}))
    assert failed.value.reason == reason
    assert str(failed.value).endswith("in request.body.json.x")


def test_missing_callback_url_is_an_error_not_an_empty_url() -> None:
    compiled = json_connector({"to": "{{to}}", "text": "{{body}}", "dlr": "{{callback_url}}"})
    with pytest.raises(MissingParameter, match="callback_url"):
        render_one(compiled, env=RenderEnvironment(secrets={"key": "s3cret"}))


def test_optional_fields_render_empty_when_absent() -> None:
    compiled = json_connector(
        {
            "to": "{{to}}",
            "text": "{{body}}",
            "from": "{{sender}}",
            "campaign": "{{campaign_id}}",
            "pe": "{{entity_id}}",
            "vars": "{{template_variables}}",
        }
    )
    bare = OutboundMessage(message_id="m-1", to="+4915112345678", body="b")
    assert body_json(render_one(compiled, bare)) == {
        "to": "+4915112345678",
        "text": "b",
        "from": "",
        "campaign": "",
        "pe": "",
        "vars": [],
    }


def test_aliases_render_exactly_like_canonical_placeholders() -> None:
    rich = OutboundMessage(
        message_id="m-1",
        to="+4915112345678",
        body="Hi",
        template_id="t-1",
        template_variables=("a", "b"),
        campaign_id="c-1",
        params={"first_name": "Anna"},
    )
    canonical = json_connector(
        {
            "to": "{{to}}",
            "msg": "{{body}}",
            "tid": "{{template_id}}",
            "vars": "{{template_variables}}",
            "cid": "{{campaign_id}}",
            "mid": "{{message_id}}",
            "name": "Dear {{params.first_name}}",
        }
    )
    moengage = json_connector(
        {
            "to": "Moesms_destination",
            "msg": "Moesms_message",
            "tid": "Moesms_dltTemplateId",
            "vars": "$$TemplateVariables",
            "cid": "Moesms_campaignId",
            "mid": "$$MessageID",
            "name": "Dear $$first_name",
        }
    )
    clevertap = json_connector(
        {
            "to": "$$To",
            "msg": "$$Body",
            "tid": "$$TemplateID",
            "vars": "$$TemplateVariables",
            "cid": "$$CampaignID",
            "mid": "$$MessageID",
            "name": "Dear $$first_name",
        }
    )
    expected = render_one(canonical, rich).body
    assert render_one(moengage, rich).body == expected
    assert render_one(clevertap, rich).body == expected


# ---------------------------------------------------------------- typing in JSON


def test_a_json_string_that_is_one_placeholder_takes_the_value_type() -> None:
    compiled = json_connector(
        {
            "to": "{{to}}",
            "text": "{{body}}",
            "vars": "{{template_variables}}",
            "parts": "{{segments}}",
            "unicode": "{{unicode}}",
            "coding": "{{encoding}}",
            "code": "{{params.code}}",
        }
    )
    sent = OutboundMessage(
        message_id="m-1",
        to="+4915112345678",
        body="Grüße 😀",
        template_variables=("x", "y"),
        params={"code": "4711"},
    )
    assert body_json(render_one(compiled, sent)) == {
        "to": "+4915112345678",
        "text": "Grüße 😀",
        "vars": ["x", "y"],
        "parts": 1,
        "unicode": True,
        "coding": "ucs2",
        "code": "4711",  # custom values are text, even when they look like numbers
    }


def test_a_json_string_mixing_text_and_placeholders_interpolates_text() -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "{{body}} ({{segments}} parts, vars {{template_variables}})"}
    )
    sent = OutboundMessage(
        message_id="m-1", to="+4915112345678", body="Hi", template_variables=("x", "y")
    )
    assert body_json(render_one(compiled, sent))["text"] == "Hi (1 parts, vars x,y)"


def test_json_literals_keep_their_types_and_keys_are_not_templates() -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "{{body}}", "flash": 0, "dlr": True, "opt": None, "{{x}}": [1]}
    )
    assert render_one(compiled).body == (
        b'{"to":"+4915112345678","text":"Hello Anna","flash":0,"dlr":true,"opt":null,"{{x}}":[1]}'
    )


# ---------------------------------------------------------------- contexts


def test_recipient_follows_the_phone_format() -> None:
    template = {"to": "{{to}}", "text": "{{body}}"}
    for phone_format, expected in [
        ("e164", "+4915112345678"),
        ("e164_digits", "4915112345678"),
        ("national", "015112345678"),
    ]:
        compiled = json_connector(template, phone_format=phone_format)
        assert body_json(render_one(compiled))["to"] == expected


def test_url_substitutions_are_one_encoded_segment_and_literal_text_is_kept() -> None:
    compiled = connector(
        {
            "url": "https://sms.example.com/v1/{{params.account}}/send?x=1&y=a%20b",
            "query": {"to": "{{to}}", "text": "{{body}}"},
        }
    )
    sent = OutboundMessage(
        message_id="m-1", to="+4915112345678", body="a b&c=d", params={"account": "a/b?c#d"}
    )
    request = render_one(compiled, sent)
    assert request.url == (
        "https://sms.example.com/v1/a%2Fb%3Fc%23d/send?x=1&y=a%20b"
        "&to=%2B4915112345678&text=a%20b%26c%3Dd"
    )


def test_form_lists_become_repeated_keys() -> None:
    compiled = connector(
        {
            "body": {
                "form": {
                    "to": "{{to}}",
                    "text": "{{body}}",
                    "var": "{{template_variables}}",
                    "tag": ["a", "{{params.code}}"],
                }
            }
        }
    )
    sent = OutboundMessage(
        message_id="m-1",
        to="+4915112345678",
        body="Hi there",
        template_variables=("x y", "z"),
        params={"code": "4711"},
    )
    assert render_one(compiled, sent).body == (
        b"to=%2B4915112345678&text=Hi+there&var=x+y&var=z&tag=a&tag=4711"
    )


@pytest.mark.parametrize(
    ("escape", "content_type", "expected"),
    [
        ("json", None, '{"text":"say \\"hi\\"\\n\\\\o/"}'),
        ("url", "application/x-www-form-urlencoded", "text=say%20%22hi%22%0A%5Co%2F"),
        ("xml", "application/xml", "<t>say &quot;hi&quot;&#10;\\o/</t>"),
        ("none", None, 'say "hi"\n\\o/'),
    ],
)
def test_raw_bodies_escape_substitutions_only(
    escape: str, content_type: str | None, expected: str
) -> None:
    templates = {
        "json": '{"text":"{{body}}"}',
        "url": "text={{body}}",
        "xml": "<t>{{body}}</t>",
        "none": "{{body}}",
    }
    compiled = connector(
        {
            "query": {"to": "{{to}}"},
            "body": {"raw": templates[escape], "escape": escape, "content_type": content_type},
        }
    )
    sent = OutboundMessage(message_id="m-1", to="+4915112345678", body='say "hi"\n\\o/')
    request = render_one(compiled, sent)
    assert request.body == expected.encode()
    assert request.header("Content-Type") == (content_type or "text/plain; charset=utf-8")


def test_a_line_break_in_a_header_value_is_refused_without_echoing_it() -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "{{body}}"}, headers={"X-Name": "{{params.first_name}}"}
    )
    injected = OutboundMessage(
        message_id="m-1",
        to="+4915112345678",
        body="b",
        params={"first_name": "Anna\r\nX-Admin: yes"},
    )
    with pytest.raises(RenderError) as refused:
        render_one(compiled, injected)
    assert refused.value.reason == "invalid_header_value"
    assert "X-Admin" not in str(refused.value)
    assert "'X-Name'" in str(refused.value)


def test_a_content_type_set_by_the_user_wins() -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "{{body}}"},
        headers={"content-type": "application/vnd.api+json"},
    )
    assert render_one(compiled).headers == (("content-type", "application/vnd.api+json"),)


def test_a_lone_surrogate_is_a_render_error() -> None:
    compiled = json_connector({"to": "{{to}}", "text": "{{body}}"})
    broken = OutboundMessage(message_id="m-1", to="+4915112345678", body="a\ud800b")
    with pytest.raises(RenderError) as refused:
        render_one(compiled, broken)
    assert refused.value.reason == "invalid_text"


# ---------------------------------------------------------------- auth


def test_auth_none_with_custom_scheme_headers() -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "{{body}}"},
        headers={"Authorization": "App {{secret.key}}", "X-Key": "{{secret.key}}"},
    )
    assert render_one(compiled).headers == (
        ("Authorization", "App s3cret"),
        ("X-Key", "s3cret"),
        ("Content-Type", "application/json"),
    )


def test_oauth2_header_needs_a_token_from_the_caller() -> None:
    auth = {
        "type": "oauth2",
        "token_url": "https://auth.example.com/oauth2/token",
        "client_id": "{{secret.key}}",
        "client_secret": "{{secret.key}}",
    }
    compiled = json_connector({"to": "{{to}}", "text": "{{body}}"}, auth=auth)
    with pytest.raises(RenderError) as refused:
        render_one(compiled)
    assert refused.value.reason == "oauth2_token_missing"
    with_token = RenderEnvironment(secrets={"key": "s3cret"}, access_token="tok-1")
    assert render_one(compiled, env=with_token).header("Authorization") == "Bearer tok-1"


def test_oauth2_send_as_body_still_sends_the_token_as_bearer() -> None:
    """send_as chooses how client credentials reach the token endpoint, not the provider."""
    auth = {
        "type": "oauth2",
        "token_url": "https://auth.example.com/oauth2/token",
        "client_id": "id",
        "client_secret": "{{secret.key}}",
        "send_as": "body",
    }
    env = RenderEnvironment(secrets={"key": "s3cret"}, access_token="tok 1")
    as_json = json_connector({"to": "{{to}}", "text": "{{body}}"}, auth=auth)
    rendered = render_one(as_json, env=env)
    assert rendered.header("Authorization") == "Bearer tok 1"
    assert rendered.body == b'{"to":"+4915112345678","text":"Hello Anna"}'


# ---------------------------------------------------------------- batching


VALUES_BATCH: dict[str, Any] = {
    "name": "batched",
    "request": {
        "url": "https://sms.example.com/send",
        "body": {"json": {"from": "{{sender}}", "text": "{{body}}", "to": []}},
    },
    "batch": {"size": 3, "mode": "values", "path": "to", "value": "{{to}}"},
}


def batched(document: dict[str, Any] = VALUES_BATCH) -> CompiledConnector:
    """Compile a batching connector."""
    return compile_connector(parse_definition(document))


def test_batch_key_groups_messages_with_equal_global_values() -> None:
    compiled = batched()
    assert batch_key(compiled, message(1)) == batch_key(compiled, message(2))
    assert batch_key(compiled, message(1)) != batch_key(compiled, message(2, body="Other"))
    assert batch_key(compiled, message(1)) != batch_key(compiled, message(2, sender="OTHER"))


def test_batch_key_ignores_what_only_the_per_message_item_uses() -> None:
    document: dict[str, Any] = {
        "name": "items",
        "request": {
            "url": "https://sms.example.com/send",
            "body": {"json": {"from": "{{sender}}"}},
        },
        "batch": {"mode": "items", "item": {"to": "{{to}}", "text": "Hi $$name, {{body}}"}},
    }
    compiled = compile_connector(parse_definition(document))
    anna = message(1, body="One", params={"name": "Anna"})
    ben = message(2, body="Two", params={"name": "Ben"})
    assert batch_key(compiled, anna) == batch_key(compiled, ben)
    assert batch_key(compiled, anna) != batch_key(compiled, message(3, sender="OTHER"))


def test_batch_key_does_not_fail_on_missing_values() -> None:
    compiled = batched()
    without_body = message(1, body=None)
    assert batch_key(compiled, without_body) == batch_key(compiled, message(2, body=None))
    with pytest.raises(MissingParameter) as failed:
        render_request(compiled, [without_body], ENV)
    assert failed.value.reason == "missing_parameter:body"


def test_batch_of_one_uses_the_batch_shape() -> None:
    assert render_request(batched(), [message(1)], ENV).body == (
        b'{"from":"ACME","text":"Your code","to":["+4915112345601"]}'
    )


def test_render_request_refuses_messages_that_cannot_share_a_request() -> None:
    compiled = batched()
    with pytest.raises(ValueError, match="different batch key"):
        render_request(compiled, [message(1), message(2, body="Other")], ENV)
    with pytest.raises(ValueError, match=r"batch.size is 3; got 4"):
        render_request(compiled, [message(n) for n in range(4)], ENV)
    with pytest.raises(ValueError, match="at least one message"):
        render_request(compiled, [], ENV)
    single = json_connector({"to": "{{to}}", "text": "{{body}}"})
    with pytest.raises(ValueError, match="no batch setting"):
        render_request(single, [message(1), message(2)], ENV)


def test_batch_values_in_a_form_body_repeat_the_field() -> None:
    document: dict[str, Any] = {
        "name": "form",
        "request": {
            "url": "https://sms.example.com/send",
            "body": {"form": {"from": "{{sender}}", "text": "{{body}}"}},
        },
        "batch": {"mode": "values", "path": "to", "value": "{{to}}"},
    }
    request = render_request(batched(document), [message(1), message(2)], ENV)
    assert request.body == (b"from=ACME&text=Your+code&to=%2B4915112345601&to=%2B4915112345602")


def test_batch_values_without_a_body_repeat_the_query_parameter() -> None:
    document: dict[str, Any] = {
        "name": "get",
        "request": {
            "method": "GET",
            "url": "https://sms.example.com/send",
            "query": {"to": "", "text": "{{body}}"},
            "phone_format": "e164_digits",
        },
        "batch": {"mode": "values", "path": "to", "value": "{{to}}"},
    }
    request = render_request(batched(document), [message(1), message(2)], ENV)
    assert parse_qsl(urlsplit(request.url).query) == [
        ("to", "4915112345601"),
        ("to", "4915112345602"),
        ("text", "Your code"),
    ]


def test_batch_items_path_may_be_nested_and_created() -> None:
    document: dict[str, Any] = {
        "name": "nested",
        "request": {
            "url": "https://sms.example.com/send",
            "body": {"json": {"data": {"from": "{{sender}}"}, "v": 2}},
        },
        "batch": {
            "mode": "items",
            "path": "data.sms.list",
            "item": {"to": "{{to}}", "t": "$$Body"},
        },
    }
    request = render_request(batched(document), [message(1), message(2)], ENV)
    assert body_json(request) == {
        "data": {
            "from": "ACME",
            "sms": {
                "list": [
                    {"to": "+4915112345601", "t": "Your code"},
                    {"to": "+4915112345602", "t": "Your code"},
                ]
            },
        },
        "v": 2,
    }
    assert request.message_ids == ("m-1", "m-2")


def test_render_batch_leaves_out_messages_that_cannot_render() -> None:
    document: dict[str, Any] = {
        "name": "items",
        "request": {"url": "https://sms.example.com/send", "body": {"json": {"v": 1}}},
        "batch": {"mode": "items", "item": {"to": "{{to}}", "text": "Hi $$name: {{body}}"}},
    }
    compiled = batched(document)
    good = message(1, params={"name": "Anna"})
    bad = message(2)
    result = render_batch(compiled, [good, bad], ENV)
    assert result.request is not None
    assert result.request.message_ids == ("m-1",)
    [(failed_id, error)] = result.failures
    assert (failed_id, error.reason) == ("m-2", "missing_parameter:params.name")


@pytest.mark.parametrize(
    ("body", "batch"),
    [
        ({"json": {"v": 1}}, {"mode": "items", "item": {"to": "{{to}}", "t": "$$n {{body}}"}}),
        ({"json": {"t": "{{body}}"}}, {"mode": "values", "path": "to", "value": "$$n{{to}}"}),
        ({"form": {"t": "{{body}}"}}, {"mode": "values", "path": "to", "value": "$$n{{to}}"}),
        (
            {"json": {"t": "{{body}}"}},
            {"mode": "join", "path": "to", "value": "$$n{{to}}", "delimiter": ","},
        ),
        (
            {"form": {"t": "{{body}}"}},
            {"mode": "join", "path": "to", "value": "$$n{{to}}", "delimiter": ";"},
        ),
    ],
)
def test_render_batch_sends_what_render_request_renders_for_the_rest(
    body: dict[str, Any], batch: dict[str, Any]
) -> None:
    document = {
        "name": "b",
        "request": {"url": "https://sms.example.com/send", "body": body},
        "batch": {"size": 5, **batch},
    }
    compiled = batched(document)
    good = [message(n, params={"n": str(n)}) for n in (1, 3, 4)]
    bad = message(2)  # no params.n
    result = render_batch(compiled, [good[0], bad, *good[1:]], ENV)
    assert result.request == render_request(compiled, good, ENV)
    assert [(m, e.reason) for m, e in result.failures] == [("m-2", "missing_parameter:params.n")]
    with pytest.raises(ValueError, match=r"batch\.size is 5"):
        render_batch(compiled, [message(n, params={"n": "1"}) for n in range(6)], ENV)


# ---------------------------------------------------------------- compiled once


def test_templates_are_parsed_once_at_compile_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = json_connector(
        {"to": "{{to}}", "text": "Hi $$first_name: {{body}}"},
        headers={"X-Key": "{{secret.key}}"},
        query={"ref": "{{message_id}}"},
    )
    expected = render_one(compiled)

    def refuse(text: str) -> placeholders.Template:
        raise AssertionError(f"template parsed while rendering: {text!r}")

    monkeypatch.setattr(placeholders, "parse_template", refuse)
    monkeypatch.setattr(rendering, "parse_template", refuse)
    assert render_one(compiled) == expected
    assert body_json(expected) == {"to": "+4915112345678", "text": "Hi Anna: Hello Anna"}


def test_compiled_connector_keeps_its_definition_and_names() -> None:
    compiled = json_connector({"to": "{{to}}", "text": "{{body}}"}, headers={"K": "$$code"})
    assert isinstance(compiled.definition, ConnectorDefinition)
    assert compiled.names == frozenset({"to", "body", "params.code"})
    assert compiled.batch_size == 1
