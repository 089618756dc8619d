"""The message log (search, filters, cursor pages) and one message's timeline."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.connectors import list_connectors
from smsrelay.store.lifecycle import FINAL, MessageStatus
from smsrelay.store.messages import (
    MESSAGE_ID_PATTERN,
    InvalidCursor,
    MessageEvent,
    MessageRecord,
    get_message,
    list_messages,
)

router = APIRouter(prefix="/messages")
PAGE_SIZE = 50
STATUSES = tuple(s.value for s in MessageStatus)


@router.get("", response_model=None)
async def messages_list(
    p: Page = PageDep,
    q: str = "",
    status: str = "",
    connector: str = "",
    campaign: str = "",
    sender: str = "",
    cursor: str = "",
) -> Response:
    """Messages, newest first: search by number or id, filter by status, connector, campaign."""
    q, campaign, sender = q.strip(), campaign.strip(), sender.strip()
    if MESSAGE_ID_PATTERN.match(q.upper()):
        return p.redirect(f"/messages/{q.upper()}")
    problem = None
    to = None
    if q:
        try:
            to = normalise_phone(q, p.runtime.settings.default_region or None)
        except InvalidPhoneNumber as exc:
            problem = f"{q!r} is neither a message id nor a phone number: {exc}"
    records: list[MessageRecord] = []
    next_cursor = None
    if problem is None:
        try:
            records, next_cursor = await list_messages(
                p.runtime.database,
                status=status if status in STATUSES else None,
                to=to,
                connector=connector or None,
                campaign_id=campaign or None,
                sender=sender or None,
                cursor=cursor or None,
                limit=PAGE_SIZE,
            )
        except InvalidCursor as exc:
            problem = str(exc)
    filters = {
        "q": q,
        "status": status,
        "connector": connector,
        "campaign": campaign,
        "sender": sender,
    }
    active = {k: v for k, v in filters.items() if v}
    stored = await list_connectors(p.runtime.database, p.runtime.secret_box)
    return p.render(
        "messages.html",
        nav="messages",
        records=records,
        filters=filters,
        filtered=bool(active),
        problem=problem,
        statuses=STATUSES,
        connector_names=[c.name for c in stored],
        next_url=(
            "?" + urlencode({**active, "cursor": next_cursor}) if next_cursor is not None else None
        ),
        first_url=("?" + urlencode(active)) if cursor else None,
    )


def _timeline(record: MessageRecord) -> list[dict[str, Any]]:
    """The message's history as the page shows it, oldest first."""
    entries: list[dict[str, Any]] = [
        {"at": record.created_at, "kind": "status", "status": "queued", "detail": {}}
    ]
    for event in record.events:
        entries.append(_entry(event))
    return entries


def _entry(event: MessageEvent) -> dict[str, Any]:
    detail = dict(event.detail or {})
    return {"at": event.at, "kind": event.kind, "status": event.status, "detail": detail}


@router.get("/{message_id}")
async def message_page(message_id: str, p: Page = PageDep) -> HTMLResponse:
    """One message: its facts and its timeline of attempts, status changes and reports."""
    record = await get_message(p.runtime.database, message_id)
    if record is None:
        raise HTTPException(404, f"There is no message {message_id!r}.")
    return p.render(
        "message.html",
        nav="messages",
        msg=record,
        timeline=_timeline(record),
        final=record.status in FINAL,
    )


@router.get("/{message_id}/status")
async def message_status(message_id: str, p: Page = PageDep) -> JSONResponse:
    """The message's status, for pages that follow it live."""
    record = await get_message(p.runtime.database, message_id)
    if record is None:
        raise HTTPException(404, f"There is no message {message_id!r}.")
    reports = [e for e in record.events if e.kind == "report"]
    return JSONResponse(
        {
            "id": record.id,
            "status": record.status.value,
            "final": record.status in FINAL,
            "failure_reason": record.failure_reason,
            "reports": len(reports),
        }
    )
