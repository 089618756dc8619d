"""The inbox page: renders, escapes what it shows, and works mounted under /sandbox."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
from fastapi import FastAPI

from smsrelay.sandbox.app import create_sandbox_app
from smsrelay.sandbox.outcomes import OUTCOME_RULES
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.testing import RunningSandbox, running_asgi_app

from .conftest import FAST

SOURCE = Path(__file__).resolve().parents[2] / "src" / "smsrelay" / "sandbox"


async def test_the_page_shows_numbers_messages_outcomes_and_chaos(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    doc = {"to": "+15005550006", "from": "TXTSMS", "body": "Your code is 1234"}
    async with client.post(f"{sbx.base_url}/api/messages", json=doc) as answer:
        assert answer.status == 200
    async with client.get(f"{sbx.base_url}/") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/html"
        page = await answer.text()
    assert "Your code is 1234" in page
    assert "+15005550006" in page
    assert "TXTSMS" in page
    for rule in OUTCOME_RULES:
        assert f'<th scope="row">{rule.ending or "anything else"}</th>' in page
    for name in ("error_rate", "reset_rate", "dlr_duplicate_rate", "seed"):
        assert f'<label for="chaos-{name}">' in page
        assert f'id="chaos-{name}"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


async def test_the_page_escapes_message_content(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    doc = {
        "to": "+15005550006",
        "from": '"><img src=x onerror=alert(2)>',
        "body": "<script>alert(1)</script>",
    }
    async with client.post(f"{sbx.base_url}/api/messages", json=doc) as answer:
        assert answer.status == 200
    async with client.get(f"{sbx.base_url}/") as answer:
        page = await answer.text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    # The only scripts are the page's own.
    assert re.findall(r"<script[^>]*>", page) == ['<script src="inbox.js" defer>']
    async with client.get(f"{sbx.base_url}/", params={"to": "<b>+1500</b>"}) as answer:
        page = await answer.text()
    assert "<b>+1500" not in page
    assert "Messages to &lt;b&gt;+1500&lt;/b&gt;" in page


async def test_the_page_can_select_one_number(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    for to, body in (("+15005550006", "for six"), ("+15005550007", "for seven")):
        async with client.post(f"{sbx.base_url}/api/messages", json={"to": to, "body": body}):
            pass
    async with client.get(f"{sbx.base_url}/", params={"to": "+15005550007"}) as answer:
        page = await answer.text()
    assert "for seven" in page
    assert "for six" not in page
    assert 'href="?to=%2B15005550007" aria-current="page"' in page


async def test_script_and_style_are_served_and_use_relative_urls(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{sbx.base_url}/inbox.js") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/javascript"
        script = await answer.text()
    async with client.get(f"{sbx.base_url}/inbox.css") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/css"
    assert "setTimeout(poll, 1000)" in script
    assert '"api/messages' in script
    assert not re.search(r"""fetch\(\s*["'`]/""", script)  # nothing absolute
    assert "innerHTML" not in script


def test_the_readme_documents_every_outcome() -> None:
    readme = (SOURCE / "README.md").read_text(encoding="utf-8")
    for rule in OUTCOME_RULES:
        if rule.ending is not None:
            assert f"| `{rule.ending}` |" in readme


async def test_mounted_under_sandbox_the_page_and_its_relative_urls_work(
    client: aiohttp.ClientSession,
) -> None:
    sandbox = Sandbox(FAST)
    host = FastAPI()
    host.mount("/sandbox", create_sandbox_app(sandbox))
    await sandbox.start()  # the host's job: a mounted app's lifespan does not run
    try:
        async with running_asgi_app(host) as base_url:
            doc = {"to": "+15005550006", "body": "mounted <hello>"}
            async with client.post(f"{base_url}/sandbox/api/messages", json=doc) as answer:
                assert answer.status == 200
            async with client.get(f"{base_url}/sandbox", allow_redirects=True) as answer:
                assert answer.status == 200
                page_url = str(answer.url)
                page = await answer.text()
            assert page_url == f"{base_url}/sandbox/"
            assert "mounted &lt;hello&gt;" in page
            # What the page's script and style sheet resolve their relative URLs to.
            for relative in ("inbox.js", "inbox.css", "api/messages?limit=200", "api/phones"):
                async with client.get(urljoin(page_url, relative)) as answer:
                    assert answer.status == 200, relative
            async with client.get(urljoin(page_url, "api/messages")) as answer:
                assert (await answer.json())["messages"][0]["body"] == "mounted <hello>"
    finally:
        await sandbox.close()
