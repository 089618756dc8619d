"""Creating connectors from provider presets, through the API and the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from gateway import running_gateway
from smsrelay.cli import app
from smsrelay.sandbox import sandbox_connector_yaml


async def test_presets_are_listed_and_create_a_working_connector(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        listed = (await gw.client.get("/v1/presets")).json()["data"]
        names = {p["name"] for p in listed}
        assert {
            "twilio",
            "vonage",
            "plivo",
            "sinch",
            "infobip",
            "8x8",
            "8x8-batch",
            "messagebird",
        } <= names
        assert len(names) >= 12
        values = {
            "account_sid": "AC0123456789abcdef0123456789abcdef",
            "auth_token": "tok-secret-1234",
        }
        created = await gw.client.post(
            "/v1/connectors?preset=twilio", json={"name": "my-twilio", "values": values}
        )
        assert created.status_code == 201, created.text
        assert "tok-secret-1234" not in created.text
        preview = await gw.client.post(
            "/v1/connectors/my-twilio/preview",
            json={"to": "+15005550006", "body": "hi", "sender": "+15005550001"},
        )
        request = preview.json()["request"]
        assert request["url"] == "https://api.twilio.com/2010-04-01/Accounts/***/Messages.json"
        assert (
            "StatusCallback="
            + created.json()["callback_url"].replace(":", "%3A").replace("/", "%2F")
            in request["body"]
        )


async def test_a_preset_names_what_is_missing_or_unknown(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        missing = await gw.client.post(
            "/v1/connectors?preset=twilio", json={"values": {"account_sid": "AC1"}}
        )
        assert missing.status_code == 422
        assert "auth_token" in {e["path"] for e in missing.json()["errors"]}
        unknown = await gw.client.post("/v1/connectors?preset=nope", json={"values": {}})
        assert unknown.status_code == 404


async def test_cli_applies_a_preset_with_set_values(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        env = {"SMSRELAY_SERVER": gw.base_url, "SMSRELAY_API_KEY": gw.api_key}
        args = [
            "connectors",
            "apply",
            "--preset",
            "vonage",
            "--name",
            "vonage-eu",
            "--set",
            "api_key=k123",
            "--set",
            "api_secret=s456",
        ]
        result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
        assert result.exit_code == 0, result.output
        assert "connector 'vonage-eu' is at version 1" in result.output
        shown = (await gw.client.get("/v1/connectors/vonage-eu")).json()
        assert shown["definition"]["secrets"]["api_secret"] == "***"


async def test_cli_applies_a_definition_file_and_a_changed_one_as_a_new_version(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        env = {"SMSRELAY_SERVER": gw.base_url, "SMSRELAY_API_KEY": gw.api_key}
        file = tmp_path / "mine.yaml"
        text = sandbox_connector_yaml(gw.base_url + "/sandbox").replace(
            "name: sandbox", "name: mine", 1
        )
        args = ["connectors", "apply", str(file)]
        # The same file twice is one version; a changed one is the next.
        changed = text.replace("timeout_seconds: 10", "timeout_seconds: 5", 1)
        for content, version in ((text, 1), (text, 1), (changed, 2)):
            file.write_text(content)
            result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
            assert result.exit_code == 0, result.output
            assert f"connector 'mine' is at version {version}" in result.output
            assert f"delivery-report URL: {gw.base_url}/dlr/" in result.output
        shown = (await gw.client.get("/v1/connectors/mine")).json()
        assert shown["version"] == 2 and shown["definition"]["secrets"] == {"base_url": "***"}
        # A file that is not a connector is refused before anything is sent.
        file.write_text("name: broken\n")
        result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
        assert result.exit_code == 1, result.output
        assert (await gw.client.get("/v1/connectors/broken")).status_code == 404


async def test_cli_dlr_suggest_lists_fields_and_proposes_a_mapping(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        env = {"SMSRELAY_SERVER": gw.base_url, "SMSRELAY_API_KEY": gw.api_key}
        body = "MessageSid=SM123&MessageStatus=delivered&To=%2B15558675310&ErrorCode="
        args = ["connectors", "dlr-suggest", "sandbox", "--body", body]
        args += ["--content-type", "application/x-www-form-urlencoded"]
        result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
        assert result.exit_code == 0, result.output
        assert any(
            line.split() == ["$.MessageSid", '"SM123"'] for line in result.output.splitlines()
        )
        assert "message_id: $.MessageSid" in result.output
        assert "status: $.MessageStatus" in result.output
