"""Senders (one default per type), webhooks with their delivery log, and API keys.

A new API key or webhook signing secret is shown once, on the page answering the POST that
created it; it is stored hashed or encrypted and never shown again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from smsrelay.connectors.errors import FieldError
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.dispatch.webhook_formats import FormatRegistry, default_registry
from smsrelay.store.api_keys import create_api_key, list_api_keys, revoke_api_key
from smsrelay.store.connectors import list_connectors
from smsrelay.store.errors import ConnectorNotFound, SenderError
from smsrelay.store.senders import (
    SENDER_TYPES,
    create_sender,
    delete_sender,
    list_senders,
    update_sender,
)
from smsrelay.store.webhooks import (
    ALL_EVENTS,
    EVENT_STATUSES,
    WEBHOOK_SCOPES,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhooks,
    new_webhook_secret,
    recent_deliveries,
)

router = APIRouter()

# ---------------------------------------------------------------- senders


async def _senders_page(
    p: Page,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    stored = await list_connectors(p.runtime.database, p.runtime.secret_box)
    return p.render(
        "senders.html",
        status=status,
        nav="senders",
        senders=await list_senders(p.runtime.database),
        connector_names=[c.name for c in stored],
        types=SENDER_TYPES,
        values=values or {"type": "transactional"},
        errors=errors or {},
    )


@router.get("/senders")
async def senders_page(p: Page = PageDep) -> HTMLResponse:
    """Every sender, and the form for a new one."""
    return await _senders_page(p)


@router.post("/senders", response_model=None)
async def add_sender(p: Page = PageDep) -> Response:
    """Create a sender; a new default replaces the previous default of its type."""
    data = await p.form()
    values = {k: data.get(k) for k in ("name", "connector", "sender_id", "type", "default")}
    try:
        sender = await create_sender(
            p.runtime.database,
            name=values["name"],
            connector=values["connector"],
            sender_id=values["sender_id"],
            type=values["type"] or "transactional",
            is_default=bool(values["default"]),
        )
    except SenderError as exc:
        return await _senders_page(p, values=values, errors={exc.field: exc.message}, status=422)
    except ConnectorNotFound as exc:
        return await _senders_page(p, values=values, errors={"connector": str(exc)}, status=422)
    return p.redirect("/senders", notice=f"Sender {sender.name} created.")


@router.post("/senders/{name}/default", response_model=None)
async def make_default(name: str, p: Page = PageDep) -> Response:
    """Make a sender the default of its type."""
    await p.form()
    if await update_sender(p.runtime.database, name, is_default=True) is None:
        raise HTTPException(404, f"There is no sender named {name!r}.")
    return p.redirect("/senders", notice=f"{name} is now the default sender of its type.")


@router.post("/senders/{name}/delete", response_model=None)
async def remove_sender(name: str, p: Page = PageDep) -> Response:
    """Delete a sender (its past messages keep its name)."""
    await p.form()
    if not await delete_sender(p.runtime.database, name):
        raise HTTPException(404, f"There is no sender named {name!r}.")
    return p.redirect("/senders", notice=f"Deleted sender {name}.")


# ---------------------------------------------------------------- webhooks


def _formats(p: Page) -> FormatRegistry:
    registry = p.runtime.extras.get("webhook_formats")
    return registry if isinstance(registry, FormatRegistry) else default_registry()


def check_webhook_form(
    url: str, events: list[str], fmt: str, scope: str, formats: FormatRegistry
) -> list[FieldError]:
    """Every problem with a webhook typed into the form, by field (pure)."""
    errors: list[FieldError] = []
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(FieldError("url", "must be an absolute http:// or https:// URL"))
    elif parts.username or parts.password:
        errors.append(FieldError("url", "must not carry credentials; the requests are signed"))
    if not events:
        errors.append(FieldError("events", "choose at least one status, or all of them"))
    unknown = [e for e in events if e != ALL_EVENTS and e not in EVENT_STATUSES]
    if unknown:
        errors.append(FieldError("events", f"unknown status {unknown[0]!r}"))
    if fmt not in formats.names():
        errors.append(FieldError("format", f"use one of {', '.join(formats.names())}"))
    if scope not in WEBHOOK_SCOPES:
        errors.append(FieldError("scope", f"use one of {', '.join(WEBHOOK_SCOPES)}"))
    return errors


async def _webhooks_page(
    p: Page,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    created: tuple[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return p.render(
        "webhooks.html",
        status=status,
        nav="webhooks",
        webhooks=await list_webhooks(p.runtime.database),
        formats=_formats(p).names(),
        event_statuses=EVENT_STATUSES,
        scopes=WEBHOOK_SCOPES,
        values=values or {"format": "native", "scope": "all", "events": [ALL_EVENTS]},
        errors=errors or {},
        created=created,
    )


@router.get("/webhooks")
async def webhooks_page(p: Page = PageDep) -> HTMLResponse:
    """Every webhook, and the form for a new one."""
    return await _webhooks_page(p)


@router.post("/webhooks", response_model=None)
async def add_webhook(p: Page = PageDep) -> Response:
    """Subscribe a URL to status events; shows the signing secret once."""
    data = await p.form()
    events = data.getlist("events")
    if ALL_EVENTS in events:
        events = [ALL_EVENTS]
    values: dict[str, Any] = {
        "url": data.get("url"),
        "format": data.get("format") or "native",
        "scope": data.get("scope") or "all",
        "events": events,
    }
    problems = check_webhook_form(
        values["url"], events, values["format"], values["scope"], _formats(p)
    )
    if problems:
        errors = {e.path: e.message for e in problems}
        return await _webhooks_page(p, values=values, errors=errors, status=422)
    secret = new_webhook_secret()
    webhook = await create_webhook(
        p.runtime.database,
        p.runtime.secret_box,
        url=values["url"],
        events=list(dict.fromkeys(events)),
        format=values["format"],
        scope=values["scope"],
        secret=secret,
    )
    return await _webhooks_page(p, created=(webhook.id, secret))


@router.get("/webhooks/{webhook_id}")
async def webhook_page(webhook_id: str, p: Page = PageDep) -> HTMLResponse:
    """One webhook and its delivery log: every delivery with each try."""
    webhook = await get_webhook(p.runtime.database, webhook_id)
    if webhook is None:
        raise HTTPException(404, f"There is no webhook {webhook_id!r}.")
    log = await recent_deliveries(p.runtime.database, webhook_id, limit=100)
    return p.render("webhook.html", nav="webhooks", webhook=webhook, deliveries=log)


@router.post("/webhooks/{webhook_id}/delete", response_model=None)
async def remove_webhook(webhook_id: str, p: Page = PageDep) -> Response:
    """Delete a webhook; its pending deliveries are dropped."""
    await p.form()
    if not await delete_webhook(p.runtime.database, webhook_id):
        raise HTTPException(404, f"There is no webhook {webhook_id!r}.")
    return p.redirect("/webhooks", notice=f"Deleted webhook {webhook_id}.")


# ---------------------------------------------------------------- API keys


async def _keys_page(
    p: Page, *, created: tuple[str, str] | None = None, error: str | None = None, status: int = 200
) -> HTMLResponse:
    return p.render(
        "api_keys.html",
        status=status,
        nav="api_keys",
        keys=await list_api_keys(p.runtime.database),
        created=created,
        error=error,
    )


@router.get("/api-keys")
async def keys_page(p: Page = PageDep) -> HTMLResponse:
    """Every API key (revoked ones too), and the form for a new one."""
    return await _keys_page(p)


@router.post("/api-keys", response_model=None)
async def add_key(p: Page = PageDep) -> Response:
    """Create an API key and show it once."""
    data = await p.form()
    name = data.get("name")
    if not name or len(name) > 128:
        return await _keys_page(p, error="Give the key a name of 1 to 128 characters.", status=422)
    key, plaintext = await create_api_key(p.runtime.database, name)
    return await _keys_page(p, created=(key.name, plaintext))


@router.post("/api-keys/{key_id}/revoke", response_model=None)
async def revoke_key(key_id: int, p: Page = PageDep) -> Response:
    """Stop accepting a key at once."""
    await p.form()
    if not await revoke_api_key(p.runtime.database, key_id):
        raise HTTPException(404, "There is no such active API key.")
    return p.redirect("/api-keys", notice="The key is revoked.")
