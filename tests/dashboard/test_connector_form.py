"""The connector form: a definition survives the form, and every error lands on its field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from smsrelay.connectors.definition import SECRET_MASK, parse_definition
from smsrelay.connectors.errors import DefinitionError, FieldError
from smsrelay.dashboard import connector_form as cf
from smsrelay.sandbox import sandbox_connector_yaml

TWILIO_LIKE = """
name: twilio-like
request:
  url: https://api.example.com/Accounts/{{secret.sid}}/Messages.json
  query: {region: eu}
  headers: {X-Trace: smsrelay}
  auth: {type: basic, username: "{{secret.sid}}", password: "{{secret.token}}"}
  body:
    form: {To: "{{to}}", From: "{{sender}}", Body: "{{body}}", StatusCallback: "{{callback_url}}"}
response:
  message_id: $.sid
  success_when: {path: $.status, in: [queued, accepted]}
delivery:
  message_id: $.MessageSid
  status: $.MessageStatus
  delivered: [delivered]
  failed: [failed, undelivered]
  verify: {type: hmac, header: X-Signature, secret: "{{secret.token}}", over: url+params, encoding: base64}
rate_limit: {per_second: 10, concurrency: 4}
retry: {max_attempts: 3}
secrets: {sid: AC123, token: t0ken}
"""


def _post(form: cf.ConnectorForm) -> cf.FormData:
    """The form as a browser submits it: every value, every row, the secret references."""
    pairs: list[tuple[str, str]] = list(form.values.items())
    for group in cf.ROW_PATHS:
        for key, value in form.rows.get(group, []):
            pairs += [(f"{group}_key", key), (f"{group}_value", value)]
    pairs += [(f"{name}__secret", ref) for name, ref in form.secret_refs.items()]
    return cf.FormData(pairs)


def _resubmitted(text: str) -> dict[str, Any]:
    """A definition shown in the form and submitted unchanged, secrets given back."""
    definition = parse_definition(yaml.safe_load(text))
    form = cf.form_from_document(definition.export(mask_secrets=True))
    document, problems = cf.document_from_form(cf.form_from_post(_post(form)))
    assert problems == []
    secrets = document["secrets"]
    assert set(secrets.values()) == {SECRET_MASK}
    document["secrets"] = {k: definition.secrets[k] for k in secrets}
    return document


OAUTH_RAW = """
name: oauth-xml
description: OAuth2 client credentials and an XML body
request:
  method: PUT
  url: https://sms.example.com/xml
  auth:
    type: oauth2
    token_url: https://auth.example.com/token
    client_id: "{{secret.client}}"
    client_secret: "{{secret.client_secret}}"
    scope: sms.send
    extra: {audience: sms}
    send_as: body
  body:
    type: raw
    raw: "<sms><to>{{to}}</to><text>{{body}}</text></sms>"
    content_type: application/xml
    escape: xml
  phone_format: e164_digits
  timeout_seconds: 7.5
response:
  success_status: [200, 201]
  success_when: {path: $.code, equals: "0"}
  retry_when: {path: $.error, matches: "^throttl"}
  message_id: 're:<id>([A-Za-z0-9]+)</id>'
  retry_status: [429, 503]
delivery:
  message_id: $.ref
  match: message_id
  status: $.state
  delivered: ["re:^DELIV"]
  verify: {type: header, name: X-Token, value: "{{secret.dlr}}"}
  window_hours: 48
rate_limit: {per_second: 2.5, burst: 5, concurrency: 2, unit: segments}
retry: {max_attempts: 2, initial_seconds: 0.5, max_seconds: 10}
secrets: {client: c1, client_secret: s3cret, dlr: d}
"""

BATCHED = """
name: batched-form
request:
  url: https://sms.example.com/bulk
  body:
    form: {text: "{{body}}", to: ["{{params.first}}", "{{params.second}}"], flag: "1"}
batch: {mode: join, path: numbers, value: "{{to}}", delimiter: ";", size: 50}
response: {message_id: "header:X-Batch-Id"}
delivery:
  reports: $.results[*]
  decode: [$.payload]
  message_id: $.id
  recipient: $.msisdn
  status: $.status
  reason: $.why
  error_code: $.code
  timestamp: $.at
  delivered: [DELIVRD]
  failed: [UNDELIV, REJECTD]
  pending: [ACCEPTD]
  verify: {type: basic, username: dlr, password: "{{secret.pw}}"}
secrets: {pw: p}
"""


@pytest.mark.parametrize(
    "text",
    [TWILIO_LIKE, OAUTH_RAW, BATCHED, sandbox_connector_yaml("http://127.0.0.1:9/sandbox")],
    ids=["form-basic-hmac", "oauth2-raw-xml", "batch-join-repeated-field", "sandbox-json"],
)
def test_a_definition_submitted_unchanged_through_the_form_is_the_same_definition(
    text: str,
) -> None:
    original = parse_definition(yaml.safe_load(text))
    assert parse_definition(_resubmitted(text)) == original


def test_secrets_and_credentials_are_shown_masked() -> None:
    definition = parse_definition(yaml.safe_load(TWILIO_LIKE))
    form = cf.form_from_document(definition.export(mask_secrets=True))
    assert form.rows["secrets"] == [("sid", SECRET_MASK), ("token", SECRET_MASK)]
    assert form.value("auth_password") == SECRET_MASK
    assert form.secret_refs == {"auth_password": "token", "hmac_secret": "token"}
    assert "t0ken" not in repr(form)


def test_a_typed_token_becomes_an_encrypted_secret_referenced_from_auth() -> None:
    form = cf.blank_form()
    form.values.update(name="acme", url="https://sms.example.com/send", auth_type="bearer")
    form.values["auth_token"] = "live-token-123"
    document, problems = cf.document_from_form(form)
    assert problems == []
    assert document["request"]["auth"] == {"type": "bearer", "token": "{{secret.auth_token}}"}
    assert document["secrets"] == {"auth_token": "live-token-123"}
    parse_definition(document)


def test_a_json_body_that_does_not_parse_is_reported_at_the_body_with_its_position() -> None:
    form = cf.blank_form()
    form.values.update(name="acme", url="https://sms.example.com/send")
    form.values["body_json"] = '{"to": "{{to}}",\n "text": }'
    _, problems = cf.document_from_form(form)
    assert problems == [
        FieldError("request.body.json", "is not valid JSON: Expecting value at line 2, column 10")
    ]


def test_rows_without_a_name_or_given_twice_are_problems_of_their_group() -> None:
    form = cf.blank_form()
    form.rows["headers"] = [("", "x"), ("X-Key", "a"), ("X-Key", "b")]
    _, problems = cf.document_from_form(form)
    assert FieldError("request.headers", "row 1 has a value but no name") in problems
    assert FieldError("request.headers.X-Key", "'X-Key' is given twice") in problems


def _placed(form: cf.ConnectorForm, path: str) -> cf.PlacedError:
    (placed,) = cf.place_errors([FieldError(path, "problem")], cf.control_paths(form))
    return placed


def test_each_error_is_placed_on_the_control_with_the_longest_covering_path() -> None:
    form = cf.blank_form()
    form.rows["headers"] = [("Accept", "json"), ("Authorization", "Bearer {{secret.key}}")]
    assert _placed(form, "request.url").anchor == "f-url"
    header = _placed(form, "request.headers.Authorization")
    assert header.anchor == cf.row_id("headers", 1, "value")
    inside_json = _placed(form, "request.body.json.message.text")
    assert (inside_json.anchor, inside_json.detail_path) == ("f-body-json", "message.text")
    assert _placed(form, "request").anchor == "f-body-type"
    assert _placed(form, "retry.max_attempts").anchor == "f-retry-max-attempts"
    assert _placed(form, "secrets.missing").anchor == cf.row_id("secrets", 0, "key")
    assert _placed(form, "delivery.verify.secret").anchor == "f-hmac-secret"
    assert _placed(form, "").anchor == ""


def test_every_error_of_an_invalid_definition_has_a_control() -> None:
    form = cf.blank_form()
    form.values.update(
        name="Bad Name",
        url="ftp://x",
        body_json='{"text": "{{nope"}',
        retry_status="5xx, 9000",
        rate_concurrency="0",
    )
    document, problems = cf.document_from_form(form)
    with pytest.raises(DefinitionError) as refused:
        parse_definition(document)
    placed = cf.place_errors(problems + refused.value.errors, cf.control_paths(form))
    anchors = {p.path: p.anchor for p in placed}
    assert anchors["name"] == "f-name"
    assert anchors["response.retry_status"] == "f-retry-status"
    assert anchors["rate_limit.concurrency"] == "f-rate-concurrency"
    assert all(p.anchor for p in placed), placed
