"""The offline connector tools of the CLI: check, render and parse-dlr."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from smsrelay.cli import app

runner = CliRunner()

CONNECTOR = """
name: acme
request:
  url: https://sms.example.com/v1/{{secret.account}}/messages
  headers: {Authorization: "Bearer {{secret.api_key}}"}
  body:
    json: {from: "{{sender}}", to: "{{to}}", text: "{{body}}", ref: "{{message_id}}", parts: "{{segments}}"}
batch: {mode: items, path: messages, size: 2, item: {to: "{{to}}", ref: "{{message_id}}"}}
response: {message_id: "$.messages[*].id"}
delivery:
  reports: $.results[*]
  message_id: $.ref
  match: message_id
  status: $.state
  reason: $.why
  delivered: [DELIVRD]
  failed: [UNDELIV]
  verify: {type: header, name: X-Token, value: "{{secret.dlr_token}}"}
secrets: {api_key: abcd1234secret, account: AC42, dlr_token: tok-123}
"""


def write(tmp_path: Path, text: str, name: str = "connector.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_a_valid_definition(tmp_path: Path) -> None:
    result = runner.invoke(app, ["connectors", "check", str(write(tmp_path, CONNECTOR))])
    assert result.exit_code == 0
    assert "connector 'acme' is valid" in result.output


def test_check_lists_every_problem_with_its_path_and_exits_1(tmp_path: Path) -> None:
    bad = CONNECTOR.replace('text: "{{body}}"', 'text: "{{bodyy}}"').replace("size: 2", "size: 0")
    result = runner.invoke(app, ["connectors", "check", str(write(tmp_path, bad))])
    assert result.exit_code == 1
    assert "batch.size" in result.output


def test_render_prints_the_exact_request_with_secrets_masked(tmp_path: Path) -> None:
    single = CONNECTOR.split("batch:")[0] + "secrets: {api_key: abcd1234secret, account: AC42}\n"
    path = write(tmp_path, single)
    result = runner.invoke(
        app,
        [
            "connectors",
            "render",
            str(path),
            "--to",
            "+4915112345678",
            "--body",
            'Hi "you" 😀',
            "--sender",
            "ACME",
        ],
    )
    assert result.exit_code == 0, result.output
    request = json.loads(result.output)
    assert request["method"] == "POST"
    assert request["url"] == "https://sms.example.com/v1/***/messages"
    assert ["Authorization", "Bearer ***"] in request["headers"]
    assert json.loads(request["body"]) == {
        "from": "ACME",
        "to": "+4915112345678",
        "text": 'Hi "you" 😀',
        "ref": "msg_000001",
        "parts": 1,
    }
    assert "abcd1234secret" not in result.output


def test_render_groups_a_batch_file_as_the_connector_says(tmp_path: Path) -> None:
    # Globals (outside the item) use only sender and body, so equal messages share a request.
    batched = CONNECTOR.replace(
        'json: {from: "{{sender}}", to: "{{to}}", text: "{{body}}", ref: "{{message_id}}", parts: "{{segments}}"}',
        'json: {from: "{{sender}}", text: "{{body}}"}',
    )
    path = write(tmp_path, batched)
    lines = [
        json.dumps({"to": f"+1500555000{i}", "body": "same", "sender": "ACME"}) for i in range(3)
    ]
    batch = write(tmp_path, "\n".join(lines) + "\n", "messages.jsonl")
    result = runner.invoke(app, ["connectors", "render", str(path), "--batch", str(batch)])
    assert result.exit_code == 0, result.output
    requests = json.loads(result.output)
    assert [len(json.loads(r["body"])["messages"]) for r in requests] == [2, 1]


def test_parse_dlr_prints_reports_and_checks_verification(tmp_path: Path) -> None:
    path = write(tmp_path, CONNECTOR)
    body = json.dumps(
        {
            "results": [
                {"ref": "m1", "state": "DELIVRD"},
                {"ref": "m2", "state": "UNDELIV", "why": "absent"},
            ]
        }
    )
    args = [
        "connectors",
        "parse-dlr",
        str(path),
        "--content-type",
        "application/json",
        "--body",
        body,
    ]
    result = runner.invoke(app, [*args, "--header", "X-Token=tok-123"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["verified"] is True
    assert [(r["key"], r["outcome"], r["reason"]) for r in parsed["reports"]] == [
        ("m1", "delivered", None),
        ("m2", "failed", "absent"),
    ]
    refused = runner.invoke(app, [*args, "--header", "X-Token=wrong"])
    assert refused.exit_code == 1
    assert json.loads(refused.output)["verified"] is False
