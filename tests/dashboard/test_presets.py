"""Creating a connector from a provider preset in the dashboard (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

from dashboard.signed_in import signed_in_gateway
from smsrelay.connectors.presets import list_presets
from smsrelay.store.connectors import get_connector

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-never-shown"


async def test_the_preset_list_offers_every_preset_with_a_link_to_its_form(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (_gw, client, _csrf):
        listed = await client.get("/ui/connectors/new/from-preset")
        assert listed.status_code == 200
        for info in list_presets():
            assert f'href="/ui/connectors/new/from-preset/{info.name}"' in listed.text
            assert info.title in listed.text
        assert 'href="/ui/connectors/new/from-preset"' in (await client.get("/ui/connectors")).text
        missing = await client.get("/ui/connectors/new/from-preset/no-such-provider")
        assert missing.status_code == 404
        assert "twilio" in missing.text  # the message lists the presets that exist


async def test_a_twilio_connector_made_from_its_preset_keeps_the_token_secret(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        form = await client.get("/ui/connectors/new/from-preset/twilio")
        assert form.status_code == 200
        html = form.text
        for control in ("var-account_sid", "var-auth_token", "var-sender", "var-base_url"):
            assert re.search(rf'<label for="{control}">', html), control
        assert re.search(r'id="var-auth_token" name="var-auth_token" type="password"', html)
        assert 'placeholder="https://api.twilio.com"' in html  # the default, left empty

        created = await client.post(
            "/ui/connectors/new/from-preset/twilio",
            data={
                "csrf_token": csrf,
                "connector_name": "twilio-us",
                "var-account_sid": SID,
                "var-auth_token": TOKEN,
                "var-sender": "",
                "var-base_url": "",
            },
        )
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/ui/connectors/twilio-us/edit"
        stored = await get_connector(gw.runtime.database, gw.runtime.secret_box, "twilio-us")
        assert stored is not None
        assert stored.definition.secrets == {"account_sid": SID, "auth_token": TOKEN}
        # Empty fields took the preset's defaults: Twilio's API, each message's own sender.
        assert stored.definition.request.url.startswith("https://api.twilio.com/")
        edit = await client.get("/ui/connectors/twilio-us/edit")
        assert edit.status_code == 200
        assert "created from the Twilio preset" in edit.text
        assert TOKEN not in edit.text


async def test_a_preset_form_with_errors_shows_them_by_the_fields_and_saves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        refused = await client.post(
            "/ui/connectors/new/from-preset/twilio",
            data={
                "csrf_token": csrf,
                "connector_name": "twilio-us",
                "var-account_sid": "",
                "var-auth_token": TOKEN,
                "var-base_url": "ftp://api.twilio.com",
            },
        )
        assert refused.status_code == 422
        html = refused.text
        assert 'id="var-account_sid-error"' in html
        assert re.search(r'id="var-account_sid"[^>]*aria-invalid="true"', html)
        assert 'id="var-base_url-error"' in html
        assert 'value="ftp://api.twilio.com"' in html  # what was typed stays
        assert TOKEN not in html  # a typed secret is never written back into a page
        assert await get_connector(gw.runtime.database, gw.runtime.secret_box, "twilio-us") is None

        fields = {
            "csrf_token": csrf,
            "connector_name": "sandbox",  # the sandbox connector exists already
            "var-account_sid": SID,
            "var-auth_token": TOKEN,
        }
        taken = await client.post("/ui/connectors/new/from-preset/twilio", data=fields)
        assert taken.status_code == 422
        assert 'id="connector_name-error"' in taken.text and "exists" in taken.text

        no_csrf = {key: value for key, value in fields.items() if key != "csrf_token"}
        no_csrf["connector_name"] = "twilio-eu"
        rejected = await client.post("/ui/connectors/new/from-preset/twilio", data=no_csrf)
        assert rejected.status_code in (400, 403)
        assert await get_connector(gw.runtime.database, gw.runtime.secret_box, "twilio-eu") is None
