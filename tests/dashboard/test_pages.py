"""The dashboard over HTTP, on a real server (SQLite and PostgreSQL): login, CSRF, forms, pages."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import yaml

from dashboard.signed_in import PASSWORD, csrf_of, sign_in, signed_in_gateway
from gateway import Gateway, running_gateway
from smsrelay.store.api_keys import list_api_keys
from smsrelay.store.connectors import get_connector
from smsrelay.store.delivery_reports import list_callbacks
from smsrelay.store.users import create_user


def _form_fields(**overrides: str) -> dict[str, str]:
    fields = {
        "name": "acme",
        "method": "POST",
        "url": "https://sms.example.com/send",
        "phone_format": "e164",
        "timeout_seconds": "15",
        "auth_type": "bearer",
        "auth_token": "live-token-123",
        "body_type": "json",
        "body_json": '{"to": "{{to}}", "text": "{{body}}"}',
        "success_status": "2xx",
        "retry_status": "429, 5xx",
        "response_message_id": "$.id",
        "rate_concurrency": "32",
        "rate_unit": "messages",
        "retry_max_attempts": "6",
        "retry_initial_seconds": "1",
        "retry_max_seconds": "300",
    }
    fields.update(overrides)
    return fields


async def test_pages_need_a_session_and_send_you_to_login_and_back(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await create_user(gw.runtime.database, "maya", PASSWORD)
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            page = await client.get("/ui/messages?status=failed")
            assert page.status_code == 303
            assert page.headers["location"] == "/ui/login?next=/ui/messages%3Fstatus%3Dfailed"
            assert (await client.post("/ui/api-keys", data={"name": "x"})).status_code == 401
            login = await client.get(page.headers["location"])
            signed = await client.post(
                "/ui/login",
                data={
                    "csrf_token": csrf_of(login.text),
                    "name": "maya",
                    "password": PASSWORD,
                    "next": "/ui/messages?status=failed",
                },
            )
            assert signed.status_code == 303
            assert signed.headers["location"] == "/ui/messages?status=failed"
            cookie = signed.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie
            assert (await client.get("/ui/messages")).status_code == 200


async def test_login_elsewhere_is_never_a_redirect_target(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await create_user(gw.runtime.database, "maya", PASSWORD)
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            login = await client.get("/ui/login")
            signed = await client.post(
                "/ui/login",
                data={
                    "csrf_token": csrf_of(login.text),
                    "name": "maya",
                    "password": PASSWORD,
                    "next": "//evil.example/ui/",
                },
            )
            assert signed.headers["location"] == "/ui/"


async def test_repeated_wrong_passwords_are_throttled_per_address(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(database_url, tmp_path) as gw:
        await create_user(gw.runtime.database, "maya", PASSWORD)
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            for _ in range(10):
                assert (await sign_in(client, "maya", "wrong password")).status_code == 401
            refused = await sign_in(client, "maya", PASSWORD)
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
            assert "Too many failed sign-ins" in refused.text


async def test_a_state_change_without_the_sessions_csrf_token_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        before = len(await list_api_keys(gw.runtime.database))
        refused = await client.post("/ui/api-keys", data={"name": "sneaky"})
        assert refused.status_code == 403
        forged = await client.post("/ui/api-keys", data={"name": "x", "csrf_token": "x" * 43})
        assert forged.status_code == 403
        assert len(await list_api_keys(gw.runtime.database)) == before
        created = await client.post("/ui/api-keys", data={"name": "crm", "csrf_token": csrf})
        assert created.status_code == 200
        shown = re.search(r'id="new-key" value="(sr_[^"]+)"', created.text)
        assert shown is not None
        again = await client.get("/ui/api-keys")
        assert shown.group(1) not in again.text


async def test_logout_ends_the_session_for_good(database_url: str, tmp_path: Path) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        cookie = client.cookies.get("smsrelay_session")
        assert (await client.post("/ui/logout", data={"csrf_token": csrf})).status_code == 303
        async with httpx.AsyncClient(base_url=gw.base_url) as replay:
            replay.cookies.set("smsrelay_session", cookie or "")
            assert (await replay.get("/ui/connectors")).status_code == 303


async def test_a_connector_form_with_errors_shows_them_in_place_and_saves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        fields = _form_fields(url="ftp://sms.example.com", csrf_token=csrf)
        refused = await client.post("/ui/connectors/new", data=fields)
        assert refused.status_code == 422
        html = refused.text
        assert re.search(r'id="f-url"[^>]*aria-invalid="true"', html)
        assert 'id="f-url-error"' in html and "must start with http://" in html
        assert 'href="#f-url"' in html  # the summary links to the field
        assert 'value="ftp://sms.example.com"' in html  # what was typed stays
        fields = _form_fields(retry_status="5xx, 9000", csrf_token=csrf)
        refused = await client.post("/ui/connectors/new", data=fields)
        assert 'id="f-retry-status-error"' in refused.text and "9000" in refused.text
        assert await get_connector(gw.runtime.database, gw.runtime.secret_box, "acme") is None


async def test_a_connector_created_in_the_form_keeps_its_token_secret(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        created = await client.post("/ui/connectors/new", data=_form_fields(csrf_token=csrf))
        assert created.status_code == 303
        assert created.headers["location"] == "/ui/connectors/acme/edit"
        stored = await get_connector(gw.runtime.database, gw.runtime.secret_box, "acme")
        assert stored is not None
        assert stored.definition.secrets == {"auth_token": "live-token-123"}
        edit = await client.get("/ui/connectors/acme/edit")
        assert "live-token-123" not in edit.text
        assert 'name="auth_token__secret" value="auth_token"' in edit.text
        exported = await client.get("/ui/connectors/acme/export")
        document = yaml.safe_load(exported.text)
        assert document["secrets"] == {"auth_token": "***"}
        assert "live-token-123" not in exported.text

        # Saved again unchanged (secrets as ***): the stored token is kept.
        again = _form_fields(csrf_token=csrf, auth_token="***", auth_token__secret="auth_token")
        again.update(secrets_key="auth_token", secrets_value="***")
        saved = await client.post("/ui/connectors/acme/edit", data=again)
        assert saved.status_code == 303
        kept = await get_connector(gw.runtime.database, gw.runtime.secret_box, "acme")
        assert kept is not None and kept.definition.secrets == stored.definition.secrets


async def test_a_preview_renders_the_unsaved_form_with_secrets_redacted(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (_, client, csrf):
        fields = _form_fields(
            csrf_token=csrf,
            sample_region="DE",
            sample_number="01511 2345678",
            sample_body='He said "hi" </pre><script>',
        )
        preview = await client.post(
            "/ui/connectors/preview", data=fields, headers={"X-Requested-With": "fetch"}
        )
        assert preview.status_code == 200
        assert "Authorization: Bearer ***" in preview.text
        assert "live-token-123" not in preview.text
        assert "+4915112345678" in preview.text
        assert "<script>" not in preview.text and "&lt;script&gt;" in preview.text


async def _delivered_test_message(gw: Gateway, client: httpx.AsyncClient, csrf: str) -> str:
    sent = await client.post(
        "/ui/connectors/sandbox/test",
        data={
            "csrf_token": csrf,
            "sample_region": "US",
            "sample_number": "5005550006",
            "sample_body": "<b>bold</b> test",
            "sample_sender": "SMSRLY",
        },
        headers={"X-Requested-With": "fetch"},
    )
    assert sent.status_code == 200, sent.text
    assert 'id="test-verdict">accepted<' in sent.text
    found = re.search(r'data-message="([0-9A-Z]{26})"', sent.text)
    assert found is not None
    await gw.wait_for_status(found.group(1), "delivered")
    return found.group(1)


async def test_every_page_renders_with_data_and_escapes_it(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        message_id = await _delivered_test_message(gw, client, csrf)
        webhook = await client.post(
            "/ui/webhooks",
            data={
                "csrf_token": csrf,
                "url": "https://hooks.example.com/sms",
                "format": "native",
                "scope": "all",
                "events": "*",
            },
        )
        assert webhook.status_code == 200 and "whsec_" in webhook.text
        webhook_id = re.search(r'href="/ui/webhooks/(wh_[a-z0-9]+)"', webhook.text)
        assert webhook_id is not None
        for path in (
            "/ui/",
            "/ui/connectors",
            "/ui/connectors/new",
            "/ui/connectors/sandbox/edit",
            "/ui/connectors/sandbox/delivery",
            "/ui/connectors/sandbox/delivery/callbacks",
            "/ui/messages",
            "/ui/messages?status=delivered&connector=sandbox",
            "/ui/messages?q=%2B15005550006",
            f"/ui/messages/{message_id}",
            "/ui/analytics",
            "/ui/analytics?by=sender&days=7",
            "/ui/analytics?by=campaign&days=90",
            "/ui/analytics?by=connector&key=sandbox&days=1",
            "/ui/senders",
            "/ui/webhooks",
            f"/ui/webhooks/{webhook_id.group(1)}",
            "/ui/api-keys",
            "/ui/connectors/import",
        ):
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert "<b>bold</b>" not in page.text, path
        message = await client.get(f"/ui/messages/{message_id}")
        assert "&lt;b&gt;bold&lt;/b&gt; test" in message.text
        assert "Delivery report" in message.text
        assert (await client.get("/ui/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV")).status_code == 404
        searched = await client.get(f"/ui/messages?q={message_id.lower()}")
        assert searched.headers["location"] == f"/ui/messages/{message_id}"
        status = await client.get(f"/ui/messages/{message_id}/status")
        assert status.json()["status"] == "delivered"


async def test_a_mapping_saved_on_the_tracking_page_reads_earlier_callbacks(
    database_url: str, tmp_path: Path
) -> None:
    async with signed_in_gateway(database_url, tmp_path) as (gw, client, csrf):
        fields = _form_fields(
            csrf_token=csrf,
            name="bare",
            url=f"{gw.base_url}/sandbox/api/messages",
            auth_type="none",
            body_json=(
                '{"to": "{{to}}", "body": "{{body}}", "client_ref": "{{message_id}}", '
                '"callback_url": "{{callback_url}}"}'
            ),
        )
        assert (await client.post("/ui/connectors/new", data=fields)).status_code == 303
        sent = await client.post(
            "/ui/connectors/bare/test",
            data={
                "csrf_token": csrf,
                "sample_region": "US",
                "sample_number": "5005550006",
                "sample_body": "hi",
            },
            headers={"X-Requested-With": "fetch"},
        )
        message_id = re.search(r'data-message="([0-9A-Z]{26})"', sent.text)
        assert message_id is not None
        stored = await get_connector(gw.runtime.database, gw.runtime.secret_box, "bare")
        assert stored is not None
        async with asyncio.timeout(15):  # the report arrives, unreadable without a mapping
            while True:
                callbacks = await list_callbacks(gw.runtime.database, stored.id)
                if callbacks and callbacks[0].state.value == "error":
                    break
                await asyncio.sleep(0.05)
        page = await client.get("/ui/connectors/bare/delivery")
        assert 'value="$.status" selected' in page.text  # proposed from the callback
        incomplete = await client.post(
            "/ui/connectors/bare/delivery",
            data={"csrf_token": csrf, "message_id": "$.id", "status": "$.bad path["},
        )
        assert incomplete.status_code == 422
        assert 'id="map-status-error"' in incomplete.text
        saved = await client.post(
            "/ui/connectors/bare/delivery",
            data={
                "csrf_token": csrf,
                "message_id": "$.id",
                "status": "$.status",
                "reason": "$.reason",
                "delivered": "delivered",
                "failed": "undelivered, rejected",
                "pending": "sent",
                "remap": "on",
            },
        )
        assert saved.status_code == 303
        await gw.wait_for_status(message_id.group(1), "delivered")
