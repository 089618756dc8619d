"""Debian's chromium, driven by Playwright, for the dashboard's browser tests.

Never `playwright install`: the browser is the system's (`make system-deps` installs it),
launched headless with a fresh profile and no background networking, and only ever
pointed at 127.0.0.1. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a long enough password"


def require_chromium() -> None:
    """Fail (not skip) when Debian's chromium is missing, saying how to get it."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(
            "the dashboard's browser tests need Debian's chromium at /usr/bin/chromium: "
            "run `make system-deps` (apt-get install chromium)",
            pytrace=False,
        )


@asynccontextmanager
async def chromium_page(
    profile: Path, *, width: int = 1280, height: int = 900
) -> AsyncIterator[Page]:
    """A page in a fresh headless chromium with the given viewport."""
    require_chromium()
    profile.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            service_workers="block",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            await context.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/dashboard/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in(page: Page, base_url: str, name: str, password: str = PASSWORD) -> None:
    """Open the dashboard, get sent to the login form, sign in and land on the overview."""
    await page.goto(base_url + "/ui/")
    await expect(page).to_have_url(re.compile(r"/ui/login"))
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


async def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no horizontal scroll)."""
    width: int = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


async def unlabelled_controls(page: Page) -> list[str]:
    """The form controls of the page without an accessible label (ids or names)."""
    found: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea')]
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.id || el.name || el.outerHTML.slice(0, 60))"""
    )
    return found
