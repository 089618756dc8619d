"""No connector secret ever leaves the server: not in logs, API answers, the CLI or dashboard pages.

One full scenario through a real server, with every logger at DEBUG (SQLAlchemy's statement
log included, so a secret written to the database in clear would show too) and uvicorn's
loggers attached. Connectors carry distinctive secrets in every place a connector can hold
one: an OAuth2 client secret, a Basic password, a header token, a query key, an HMAC DLR
secret and a Basic DLR password; the provider issues an access token. The scenario sends,
test-sends, previews, exports, lists, reads histories, takes DLR callbacks (good and bad),
and has the provider fail while echoing every credential back (in the body, in a header,
in an OAuth2 error). Then every captured byte is searched for every spelling of every
secret: as is, percent-encoded, JSON-escaped, and base64 of `user:password`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from aiohttp import web
from typer.testing import CliRunner

from gateway import Gateway, running_gateway
from hardening.servers import recording_server
from smsrelay.cli import app as cli_app
from smsrelay.store.users import create_user

OAUTH_SECRET = "oauth+Cl1ent/Secret=Zq81"
BASIC_USER = "smsuser"
BASIC_PASSWORD = "b@sic Pass/w0rd!Kx7"
HEADER_TOKEN = "hdr-Tok3n:Vm2&Q"
QUERY_KEY = "query+Key/Xy9?"
DLR_HMAC = "hmac-S3cret#Lp5"
DLR_USER = "dlrclient"
DLR_PASSWORD = "dlr-B4sic;Pw%"
ACCESS_TOKEN = "acc3ss-T0ken.Ry6"
WEBHOOK_SECRET = "whk-Sign1ng-Secret-Nn4"
SECRETS = (
    OAUTH_SECRET,
    BASIC_PASSWORD,
    HEADER_TOKEN,
    QUERY_KEY,
    DLR_HMAC,
    DLR_PASSWORD,
    ACCESS_TOKEN,
    WEBHOOK_SECRET,
)
BASIC_PAIRS = (
    ("smsrelay", OAUTH_SECRET),
    (BASIC_USER, BASIC_PASSWORD),
    (DLR_USER, DLR_PASSWORD),
)
UI_PAGE_LIMIT = 30
PAGES_PER_KIND = 2  # /ui/messages/<id>: two of them show what every one does
OK_NUMBER = "+15005550006"
REJECT_NUMBER = "+15005550400"
ERROR_NUMBER = "+15005550500"


def spellings() -> dict[str, str]:
    """Every form a secret could take in text -> which secret it is."""
    found: dict[str, str] = {}
    for secret in SECRETS:
        for form in (
            secret,
            quote(secret, safe=""),
            quote(secret),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
        ):
            found[form] = secret
    for user, password in BASIC_PAIRS:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        found[pair] = f"base64({user}:…)"
    return found


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def received_credentials(request: web.Request) -> str:
    """Every credential a request carried, as a careless provider would echo them back."""
    authorization = request.headers.get("Authorization", "")
    echo = [f"auth={authorization}", f"url={request.path_qs}"]
    if authorization.startswith("Basic "):
        echo.append("decoded=" + base64.b64decode(authorization[6:]).decode())
    echo += [f"{k}={v}" for k, v in request.query.items()]
    if "X-Api-Token" in request.headers:
        echo.append(f"token={request.headers['X-Api-Token']}")
    return " ".join(echo)


async def provider(request: web.Request) -> web.StreamResponse:
    """A provider that answers failures by echoing every credential it was sent."""
    echo = received_credentials(request)
    headers = {"X-Echo-Authorization": request.headers.get("Authorization", "")}
    if request.path.endswith("/token"):
        expected = basic("smsrelay", OAUTH_SECRET)
        if request.path.startswith("/bad") or request.headers.get("Authorization") != expected:
            error = {"error": "invalid_client", "error_description": f"refused {echo}"}
            return web.json_response(error, status=401, headers=headers)
        return web.json_response({"access_token": ACCESS_TOKEN, "expires_in": 3600})
    if request.path.startswith("/hooks/"):
        return web.json_response({"ok": True})
    document = json.loads(await request.read())
    if document["to"].endswith("0400"):
        return web.json_response({"error": f"refused {echo}"}, status=400, headers=headers)
    if document["to"].endswith("0500"):
        return web.json_response({"error": f"failed {echo}"}, status=500, headers=headers)
    return web.json_response({"id": f"p-{document['ref']}", "status": "accepted"}, headers=headers)


def connectors(provider_url: str) -> list[dict[str, Any]]:
    body = {"json": {"to": "{{to}}", "text": "{{body}}", "ref": "{{message_id}}"}}
    response = {"message_id": "$.id", "error": "$.error"}
    retry = {"max_attempts": 2, "initial_seconds": 0.05, "max_seconds": 0.1}
    delivery = {"message_id": "$.id", "status": "$.status", "failed": ["undelivered"]}
    oauth = {
        "type": "oauth2",
        "token_url": f"{provider_url}/oauth/token",
        "client_id": "smsrelay",
        "client_secret": "{{secret.client_secret}}",
    }
    return [
        {
            "name": "sec-oauth",
            "request": {"url": f"{provider_url}/send/oauth", "auth": oauth, "body": body},
            "response": response,
            "retry": retry,
            "delivery": {
                **delivery,
                "verify": {
                    "type": "basic",
                    "username": DLR_USER,
                    "password": "{{secret.dlr_password}}",
                },
            },
            "secrets": {"client_secret": OAUTH_SECRET, "dlr_password": DLR_PASSWORD},
        },
        {
            "name": "sec-basic",
            "request": {
                "url": f"{provider_url}/send/basic",
                "query": {"key": "{{secret.query_key}}"},
                "headers": {"X-Api-Token": "{{secret.header_token}}"},
                "auth": {
                    "type": "basic",
                    "username": BASIC_USER,
                    "password": "{{secret.password}}",
                },
                "body": body,
            },
            "response": response,
            "retry": retry,
            "delivery": {
                **delivery,
                "verify": {
                    "type": "hmac",
                    "header": "X-Signature",
                    "secret": "{{secret.dlr_hmac}}",
                },
            },
            "secrets": {
                "password": BASIC_PASSWORD,
                "header_token": HEADER_TOKEN,
                "query_key": QUERY_KEY,
                "dlr_hmac": DLR_HMAC,
            },
        },
        {
            "name": "sec-badtoken",
            "request": {
                "url": f"{provider_url}/send/bad",
                "auth": {**oauth, "token_url": f"{provider_url}/bad/token"},
                "body": body,
            },
            "response": response,
            "retry": retry,
            "secrets": {"client_secret": OAUTH_SECRET},
        },
    ]


class Corpus:
    """Everything the server said: API answers (by request), CLI output, pages."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def response(self, response: httpx.Response) -> httpx.Response:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(where, headers + "\n\n" + response.text)
        return response


async def call(
    gw: Gateway, corpus: Corpus, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    return corpus.response(await gw.client.request(method, path, **kwargs))


async def run_scenario(gw: Gateway, provider_url: str, corpus: Corpus) -> None:
    hook = await gw.client.post(
        "/v1/webhooks",
        json={"url": f"{provider_url}/hooks/all", "events": ["*"], "secret": WEBHOOK_SECRET},
    )
    assert hook.status_code == 201, hook.text  # shows its secret once, by design: not scanned
    for document in connectors(provider_url):
        name = document["name"]
        answer = await call(gw, corpus, "PUT", f"/v1/connectors/{name}", json=document)
        assert answer.status_code == 200, answer.text
        sender = {"name": name, "connector": name, "sender_id": "SECRET"}
        assert (await call(gw, corpus, "POST", "/v1/senders", json=sender)).status_code == 201
        sample = {"to": OK_NUMBER, "body": "preview me"}
        preview = await call(gw, corpus, "POST", f"/v1/connectors/{name}/preview", json=sample)
        assert preview.status_code == 200, preview.text
        await call(gw, corpus, "GET", f"/v1/connectors/{name}")
    await call(gw, corpus, "GET", "/v1/connectors")
    for to in (OK_NUMBER, REJECT_NUMBER):
        trace = await call(
            gw, corpus, "POST", "/v1/connectors/sec-basic/test", json={"to": to, "body": "t"}
        )
        assert trace.status_code == 200, trace.text
    ids: dict[tuple[str, str], str] = {}
    for name in ("sec-oauth", "sec-basic", "sec-badtoken"):
        for to in (OK_NUMBER, REJECT_NUMBER, ERROR_NUMBER):
            queued = await call(
                gw, corpus, "POST", "/v1/messages", json={"to": to, "body": "b", "sender": name}
            )
            assert queued.status_code == 202, queued.text
            ids[name, to] = queued.json()["id"]
    settled = {"sent", "failed", "dispatch_error", "delivered"}
    messages = {key: await gw.wait_for_status(mid, settled) for key, mid in ids.items()}
    assert messages["sec-basic", REJECT_NUMBER]["status"] == "failed"
    assert messages["sec-basic", ERROR_NUMBER]["status"] == "failed"
    assert messages["sec-oauth", OK_NUMBER]["status"] in ("sent", "delivered")
    assert messages["sec-badtoken", OK_NUMBER]["status"] == "dispatch_error"
    await deliver_reports(gw, corpus, messages)
    for mid in ids.values():
        await call(gw, corpus, "GET", f"/v1/messages/{mid}")
    await call(gw, corpus, "GET", "/v1/messages", params={"limit": 100})
    for name in ("sec-oauth", "sec-basic"):
        reports = await call(gw, corpus, "GET", f"/v1/connectors/{name}/delivery-reports")
        for stored in reports.json()["data"][:3]:
            await call(
                gw,
                corpus,
                "POST",
                f"/v1/connectors/{name}/delivery-mapping/suggest",
                json={"callback_id": stored["id"]},
            )
    await call(gw, corpus, "GET", f"/v1/webhooks/{hook.json()['id']}")
    await call(gw, corpus, "GET", "/v1/webhooks")
    for name in ("sec-oauth", "sec-basic", "sec-badtoken"):
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli_app,
            ["connectors", "export", name, "--server", gw.base_url, "--api-key", gw.api_key],
        )
        assert result.exit_code == 0, result.output
        corpus.add(f"smsrelay connectors export {name}", result.output)


async def deliver_reports(
    gw: Gateway, corpus: Corpus, messages: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """Good and badly signed DLR callbacks for the two connectors that verify them."""
    for name in ("sec-oauth", "sec-basic"):
        view = await gw.client.get(f"/v1/connectors/{name}")
        path = httpx.URL(view.json()["callback_url"]).path
        provider_id = messages[name, OK_NUMBER]["provider_ids"][0]
        body = json.dumps({"id": provider_id, "status": "delivered"}).encode()
        if name == "sec-oauth":
            good = {"Authorization": basic(DLR_USER, DLR_PASSWORD)}
            bad = {"Authorization": basic(DLR_USER, "wrong")}
        else:
            signature = hmac.new(DLR_HMAC.encode(), body, hashlib.sha256).hexdigest()
            good, bad = {"X-Signature": signature}, {"X-Signature": "0" * 64}
        content = {"Content-Type": "application/json"}
        accepted = await call(gw, corpus, "POST", path, content=body, headers={**good, **content})
        assert accepted.status_code == 200, accepted.text
        refused = await call(gw, corpus, "POST", path, content=body, headers={**bad, **content})
        assert refused.status_code == 401, refused.text
        await gw.wait_for_status(messages[name, OK_NUMBER]["id"], "delivered")


async def crawl_dashboard(gw: Gateway, corpus: Corpus) -> int:
    """Sign in to the dashboard (if this build has one) and read every page it links to."""
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as browser:
        login = await browser.get("/ui/login")
        if login.status_code == 404:
            return 0
        await create_user(gw.runtime.database, "auditor", "a long enough passphrase 1")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None, login.text[:2000]
        signed_in = await browser.post(
            "/ui/login",
            data={
                "name": "auditor",
                "password": "a long enough passphrase 1",
                "csrf_token": token.group(1),
            },
        )
        assert signed_in.status_code in (200, 303), signed_in.text[:2000]
        queue, seen, kinds = ["/ui/"], set[str](), dict[str, int]()
        while queue and len(seen) < UI_PAGE_LIMIT:
            path = queue.pop(0)
            kind = re.sub(r"/[A-Za-z0-9_-]{16,}|/\d+", "/*", path)
            if path in seen or kinds.get(kind, 0) >= PAGES_PER_KIND:
                continue
            seen.add(path)
            kinds[kind] = kinds.get(kind, 0) + 1
            page = corpus.response(await browser.get(path, follow_redirects=True))
            for link in re.findall(r'href="(/ui/[^"#?]*)', page.text):
                if not link.startswith(("/ui/static", "/ui/logout")) and link not in seen:
                    queue.append(link)
        return len(seen)


def find_leaks(texts: list[tuple[str, str]]) -> list[str]:
    leaks = []
    forms = spellings()
    for where, text in texts:
        for form, secret in forms.items():
            at = text.find(form)
            if at >= 0:
                context = text[max(0, at - 120) : at + len(form) + 60].replace("\n", " ")
                leaks.append(f"{secret!r} in {where}: …{context}…")
    return leaks


async def test_no_secret_appears_in_logs_answers_cli_output_or_pages(
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # SQLAlchemy defaults to WARN
    corpus = Corpus()
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    async with (
        recording_server(provider) as recorder,
        running_gateway(database_url, tmp_path) as gw,
    ):
        for logger in uvicorn_loggers:
            logger.addHandler(caplog.handler)
            logger.setLevel(logging.DEBUG)
        try:
            await run_scenario(gw, recorder.url, corpus)
            pages = await crawl_dashboard(gw, corpus)
        finally:
            for logger in uvicorn_loggers:
                logger.removeHandler(caplog.handler)
    captured = capsys.readouterr()
    records = [
        (f"log {r.name} {r.levelname}", r.getMessage() + "\n" + (r.exc_text or ""))
        for r in caplog.records
    ]
    texts = [*corpus.texts, *records, ("stdout", captured.out), ("stderr", captured.err)]
    # The scenario really exercised what it claims: secrets went to the provider, pages and
    # logs were captured, failures echoed credentials back.
    sent_auth = {h.headers.get("Authorization") for h in recorder.seen}
    assert basic(BASIC_USER, BASIC_PASSWORD) in sent_auth
    assert f"Bearer {ACCESS_TOKEN}" in sent_auth
    assert any("sqlalchemy" in where for where, _ in records), "statement log captured"
    assert any("uvicorn.access" in where for where, _ in records), "access log captured"
    assert len(corpus.texts) > 40 + pages
    leaks = find_leaks(texts)
    wheres = sorted({leak.split(": …")[0].split(" in ", 1)[1] for leak in leaks})
    assert not leaks, f"{len(leaks)} leak(s) in {wheres}:\n" + "\n".join(leaks[:30])
