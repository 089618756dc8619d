"""The dashboard in a real browser (Debian's headless chromium): a new user's first hour.

A few long scenarios rather than many short ones: every page load costs, on two cores.
Each saves screenshots under tests/artifacts/dashboard/. SQLite only; the pages' queries
run on both databases in test_pages.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from dashboard.browser import (
    PASSWORD,
    chromium_page,
    horizontal_overflow,
    screenshot,
    sign_in,
    unlabelled_controls,
)
from gateway import Gateway, running_gateway
from smsrelay.store.messages import list_messages
from smsrelay.store.users import create_user

JSON_BODY = {
    "to": "{{to}}",
    "body": "{{body}}",
    "client_ref": "{{message_id}}",
    "callback_url": "{{callback_url}}",
}


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQLite database."""
    path = tmp_path / "smsrelay.db"
    shutil.copyfile(sqlite_template, path)
    yield f"sqlite+aiosqlite:///{path}"


async def _send_test_sms(page: Page, number: str, text: str) -> None:
    await page.get_by_label("Country").select_option("US")
    await page.get_by_label("Number", exact=True).fill(number)
    await page.get_by_label("Text", exact=True).fill(text)
    await page.get_by_role("button", name="Send test SMS").click()
    await expect(page.locator("#test-verdict")).to_have_text("accepted")


async def _create_sandbox_connector(page: Page, gw: Gateway) -> None:
    await page.get_by_role("link", name="Connectors", exact=True).click()
    await page.get_by_role("link", name="New connector").click()
    await expect(page.get_by_role("heading", name="New connector")).to_be_visible()
    await page.get_by_label("Name", exact=True).fill("acme-sandbox")
    await page.get_by_label("URL", exact=True).fill(f"{gw.base_url}/sandbox/api/messages")
    await page.get_by_label("Body type").select_option("json")
    await page.get_by_label("JSON body").fill(json.dumps(JSON_BODY, indent=2))
    await page.get_by_label("Provider's message id").fill("$.id")

    # A mistake first: the error is shown beside the field it is about.
    await page.get_by_label("Retry statuses").fill("5xx, 9000")
    await page.get_by_role("button", name="Create connector").click()
    retry = page.locator("#f-retry-status")
    await expect(retry).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#f-retry-status-error")).to_contain_text("9000")
    await expect(page.locator("#error-summary a[href='#f-retry-status']")).to_be_visible()
    await screenshot(page, "02-connector-form-error-in-place")
    await retry.fill("429, 5xx")

    await page.get_by_label("Number", exact=True).fill("5005550006")
    await page.get_by_role("button", name="Preview request").click()
    preview = page.locator("#preview-request")
    await expect(preview).to_contain_text(f"POST {gw.base_url}/sandbox/api/messages")
    await expect(preview).to_contain_text('"to": "+15005550006"')
    await expect(preview).to_contain_text('"client_ref": "PREVIEW')
    await screenshot(page, "03-connector-form-preview")

    await page.get_by_role("button", name="Create connector").click()
    await expect(page.get_by_role("status")).to_contain_text("Connector acme-sandbox created")


async def test_a_new_user_connects_a_provider_tracks_delivery_and_reads_analytics(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with running_gateway(sqlite_url, tmp_path) as gw:
        await create_user(gw.runtime.database, "maya", PASSWORD)
        async with chromium_page(tmp_path / "profile") as page:
            await sign_in(page, gw.base_url, "maya")
            await screenshot(page, "01-overview")

            await _create_sandbox_connector(page, gw)

            # The first test SMS is accepted; without a delivery mapping it stays `sent`.
            await _send_test_sms(page, "5005550006", "First test")
            await expect(page.locator("#test-status")).to_have_text("sent")
            await expect(page.locator("#untracked-hint")).to_be_visible()
            await expect(page.locator(".try-result")).to_contain_text('"client_ref"')
            await screenshot(page, "04-test-send-accepted")

            # Delivery tracking: the sandbox's callback arrived; map it with the dropdowns.
            await page.get_by_role("link", name="Set up delivery tracking").click()
            await expect(page.get_by_role("heading", name="Delivery tracking")).to_be_visible()
            callback_url = await page.get_by_role("textbox", name="Callback URL").input_value()
            assert re.fullmatch(rf"{re.escape(gw.base_url)}/dlr/[\w-]+", callback_url)
            await expect(page.locator("#callback-list .callback")).to_have_count(1, timeout=15_000)
            fields = page.locator("#callback-fields")
            await expect(fields).to_contain_text("$.status")
            await expect(fields).to_contain_text("delivered")
            # Proposed from the callback; the user checks them and adds the reason field.
            await expect(page.get_by_label("Message id", exact=True)).to_have_value("$.id")
            await expect(page.get_by_label("Status", exact=True)).to_have_value("$.status")
            await page.get_by_label("Failure reason (optional)").select_option("$.reason")
            await page.get_by_label("Values meaning failed").fill("undelivered, rejected")
            await screenshot(page, "05-delivery-mapping")
            await page.get_by_role("button", name="Save mapping").click()
            await expect(page.get_by_role("status")).to_contain_text("Delivery mapping saved")

            # The callback received before the mapping is read now: the first SMS is delivered.
            await expect(page.locator("#callback-list .badge.state-mapped")).to_have_count(
                1, timeout=15_000
            )
            await expect(page.locator("#callback-list")).to_contain_text("delivered")

            # A second test SMS: delivered, followed live on the connector page.
            await page.get_by_role("link", name="Back to the connector").click()
            await _send_test_sms(page, "5005550006", "Second test")
            await expect(page.locator("#test-status")).to_have_text("delivered", timeout=15_000)
            await screenshot(page, "06-test-send-delivered")

            # ...and an undelivered one, so the analytics have a failure reason.
            await _send_test_sms(page, "5005550001", "Third test")
            await expect(page.locator("#test-status")).to_have_text("undelivered", timeout=15_000)

            await page.get_by_role("link", name="Delivery tracking").first.click()
            await expect(page.locator("#callback-list .badge.state-mapped")).to_have_count(3)
            await screenshot(page, "07-delivery-callbacks-mapped")

            # The message log and one message's timeline.
            await page.get_by_role("link", name="Messages", exact=True).click()
            await page.get_by_label("Status").select_option("delivered")
            await page.get_by_role("button", name="Search").click()
            rows = page.locator("table.messages tbody tr")
            await expect(rows).to_have_count(2)
            await screenshot(page, "08-messages")
            await rows.first.get_by_role("link").click()
            timeline = page.locator(".timeline")
            await expect(timeline).to_contain_text("Delivery report")
            await expect(timeline).to_contain_text("Attempt 1")
            await page.get_by_text("Request and response").first.click()
            await expect(timeline).to_contain_text("HTTP 200")
            await screenshot(page, "09-message-timeline")

            # Analytics: the funnel, the daily rate and the failure reasons, as SVG.
            await page.get_by_role("link", name="Analytics").click()
            funnel = page.locator("svg.funnel")
            await expect(funnel).to_be_visible()
            await expect(funnel).to_contain_text("Delivered")
            await expect(page.locator("svg.rates rect.bar")).to_have_count(1)
            await expect(page.locator("svg.bars")).to_contain_text("absent_subscriber")
            await page.get_by_role("link", name="acme-sandbox").click()
            await expect(page.locator("svg.funnel")).to_contain_text("3 ·")
            await screenshot(page, "10-analytics")

        records, _ = await list_messages(gw.runtime.database, connector="acme-sandbox")
        assert sorted(r.status.value for r in records) == ["delivered", "delivered", "undelivered"]


MAIN_PAGES = (
    ("overview", "/ui/"),
    ("connectors", "/ui/connectors"),
    ("connector-form", "/ui/connectors/sandbox/edit"),
    ("delivery", "/ui/connectors/sandbox/delivery"),
    ("messages", "/ui/messages"),
    ("campaigns", "/ui/campaigns"),
    ("analytics", "/ui/analytics"),
    ("senders", "/ui/senders"),
    ("suppressions", "/ui/suppressions"),
    ("webhooks", "/ui/webhooks"),
    ("api-keys", "/ui/api-keys"),
    ("presets", "/ui/connectors/new/from-preset"),
    ("preset-form", "/ui/connectors/new/from-preset/msg91"),
)


async def test_the_main_pages_fit_a_375_pixel_phone_without_horizontal_scroll(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with running_gateway(sqlite_url, tmp_path) as gw:
        await create_user(gw.runtime.database, "maya", PASSWORD)
        accepted = await gw.client.post(
            "/v1/messages", json={"to": "+15005550001", "body": "a phone-sized test"}
        )
        message_id = accepted.json()["id"]
        await gw.wait_for_status(message_id, "undelivered")
        pages = (*MAIN_PAGES, ("message", f"/ui/messages/{message_id}"))
        async with chromium_page(tmp_path / "profile", width=375, height=740) as page:
            await sign_in(page, gw.base_url, "maya")
            overflowing = {}
            unlabelled = {}
            for name, path in pages:
                await page.goto(gw.base_url + path)
                await expect(page.locator("h1")).to_be_visible()
                await screenshot(page, f"phone-{name}")
                overflow = await horizontal_overflow(page)
                if overflow > 0:
                    overflowing[name] = overflow
                if missing := await unlabelled_controls(page):
                    unlabelled[name] = missing
            assert overflowing == {}, f"pages wider than 375 px (by px): {overflowing}"
            assert unlabelled == {}, f"form controls without a label: {unlabelled}"

            # Keyboard: the skip link comes first and lands on the content; focus is visible.
            await page.goto(gw.base_url + "/ui/connectors")
            await page.keyboard.press("Tab")
            skip = page.get_by_role("link", name="Skip to content")
            await expect(skip).to_be_focused()
            outline = await skip.evaluate("el => getComputedStyle(el).outlineStyle")
            assert outline != "none"
            await page.keyboard.press("Enter")
            await expect(page.locator("main")).to_be_focused()
