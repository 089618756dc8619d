"""Redaction: secrets never reach a trace shown to a user, in any spelling."""

from __future__ import annotations

from typing import Any

from smsrelay.connectors.definition import parse_definition
from smsrelay.connectors.exchange import HttpRequest, OutboundMessage
from smsrelay.connectors.redaction import redact_request, redact_text
from smsrelay.connectors.rendering import RenderEnvironment, compile_connector, render_request

MESSAGE = OutboundMessage(message_id="m-1", to="+4915112345678", body="Hello Anna")


def request_for(secret: str, request: dict[str, Any]) -> HttpRequest:
    """Render MESSAGE with a connector whose only secret `key` is `secret`."""
    document = {
        "name": "leaky",
        "request": {"url": "https://sms.example.com/send", **request},
        "secrets": {"key": secret},
    }
    compiled = compile_connector(parse_definition(document))
    return render_request(compiled, [MESSAGE], RenderEnvironment(secrets={"key": secret}))


def test_redaction_masks_secrets_in_every_spelling() -> None:
    secret = 'p@ss "w/rd"+€'
    request = request_for(
        secret,
        {
            "url": "https://sms.example.com/{{secret.key}}/send",
            "query": {"k": "{{secret.key}}"},
            "headers": {"X-Key": "{{secret.key}}", "X-Token": "Token {{secret.key}}"},
            "auth": {"type": "basic", "username": "user", "password": "{{secret.key}}"},
            "body": {"form": {"to": "{{to}}", "text": "{{body}}", "k": "{{secret.key}}"}},
        },
    )
    redacted = redact_request(request, {"key": secret})
    assert redacted.url == "https://sms.example.com/***/send?k=***"
    assert redacted.headers == (
        ("X-Key", "***"),
        ("X-Token", "Token ***"),
        ("Authorization", "Basic ***"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    )
    assert redacted.body == b"to=%2B4915112345678&text=Hello+Anna&k=***"
    assert redacted.message_ids == request.message_ids


def test_redaction_masks_json_and_xml_escaped_secrets() -> None:
    secret = 'p"<w\\d>&\n'
    as_json = request_for(
        secret, {"body": {"json": {"to": "{{to}}", "text": "{{body}}", "k": "{{secret.key}}"}}}
    )
    assert redact_request(as_json, {"key": secret}).body == (
        b'{"to":"+4915112345678","text":"Hello Anna","k":"***"}'
    )
    as_xml = request_for(
        secret,
        {"body": {"raw": "<m to='{{to}}' k='{{secret.key}}'>{{body}}</m>", "escape": "xml"}},
    )
    assert redact_request(as_xml, {"key": secret}).body == (
        b"<m to='+4915112345678' k='***'>Hello Anna</m>"
    )


def test_redaction_masks_extra_values_and_any_authorization_credentials() -> None:
    request = HttpRequest(
        method="POST",
        url="https://sms.example.com/send?access_token=tok-123",
        headers=(
            ("Authorization", "Bearer tok-123"),
            ("Proxy-Authorization", "rawkey"),
            ("X-Basic", "Basic dXNlcjpzM2NyZXQ="),  # user:s3cret
        ),
        body=b'{"access_token":"tok-123"}',
    )
    redacted = redact_request(request, {"key": "s3cret"}, extra=["tok-123"])
    assert redacted.url == "https://sms.example.com/send?access_token=***"
    assert redacted.headers == (
        ("Authorization", "Bearer ***"),
        ("Proxy-Authorization", "***"),
        ("X-Basic", "Basic ***"),
    )
    assert redacted.body == b'{"access_token":"***"}'


def test_redact_text_masks_encoded_forms_and_ignores_empty_secrets() -> None:
    text = "failed for key=a%2Fb and a/b, empty ''"
    assert redact_text(text, ["a/b", ""]) == "failed for key=*** and ***, empty ''"


def test_a_very_short_secret_over_redacts_rather_than_leaks() -> None:
    assert redact_text("code 1 of 1001", ["1"]) == "code *** of ***00***"
