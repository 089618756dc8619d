"""`/v1/webhooks`: outgoing event subscriptions and their delivery logs (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from smsrelay.connectors.errors import FieldError
from smsrelay.dispatch.webhook_formats import FormatRegistry, default_registry
from smsrelay.http_common import Problem, get_runtime, not_found, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.webhooks import (
    ALL_EVENTS,
    EVENT_STATUSES,
    DeliveryLog,
    StoredWebhook,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhooks,
    new_webhook_secret,
    recent_deliveries,
)

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_api_key)]
)

MIN_SECRET_CHARS = 16


class WebhookIn(BaseModel):
    """A webhook to create."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/sms-events"])
    events: list[str] | None = Field(
        default=None,
        max_length=len(EVENT_STATUSES),
        description=(
            f'Statuses to receive ({", ".join(EVENT_STATUSES)}) or ["*"] for all. Default: '
            'all, except for the moengage format: ["delivered", "undelivered", "failed"] '
            "(MoEngage reads any other status as a failure)."
        ),
    )
    format: str = Field(default="native", max_length=16)
    scope: Literal["all", "named"] | None = Field(
        default=None,
        description=(
            "all: events of every message; named: only of messages whose webhook_id names "
            "this webhook. Default: all for the native format, named for the others."
        ),
    )
    secret: str | None = Field(
        default=None,
        max_length=256,
        description="Signing secret (at least 16 characters); generated when omitted.",
    )


def _formats(runtime: Runtime) -> FormatRegistry:
    registry = runtime.extras.get("webhook_formats")
    return registry if isinstance(registry, FormatRegistry) else default_registry()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def webhook_view(webhook: StoredWebhook) -> dict[str, Any]:
    """A webhook as the API shows it (never its secret)."""
    return {
        "id": webhook.id,
        "url": webhook.url,
        "format": webhook.format,
        "events": list(webhook.events),
        "scope": webhook.scope,
        "active": webhook.active,
        "created_at": webhook.created_at.isoformat(),
    }


def delivery_view(delivery: DeliveryLog) -> dict[str, Any]:
    """One delivery with its tries."""
    return {
        "id": delivery.id,
        "message_id": delivery.message_id,
        "type": delivery.type,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "created_at": delivery.created_at.isoformat(),
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "finished_at": _iso(delivery.finished_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "tries": [
            {
                "at": t.at.isoformat(),
                "status_code": t.status_code,
                "error": t.error,
                "duration_ms": t.duration_ms,
            }
            for t in delivery.tries
        ],
    }


def check_webhook(body: WebhookIn, formats: FormatRegistry) -> list[FieldError]:
    """Every problem with a webhook to create, by field (pure)."""
    errors: list[FieldError] = []
    parts = urlsplit(body.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(FieldError("url", "must be an absolute http:// or https:// URL"))
    elif parts.username or parts.password:
        errors.append(FieldError("url", "must not carry credentials; the request is signed"))
    events = body.events if body.events is not None else []
    if body.events is not None and not events:
        errors.append(FieldError("events", f'give at least one status, or ["{ALL_EVENTS}"]'))
    for index, event in enumerate(events):
        if event != ALL_EVENTS and event not in EVENT_STATUSES:
            errors.append(
                FieldError(
                    f"events[{index}]",
                    f"unknown status {event!r}; use {', '.join(EVENT_STATUSES)} or {ALL_EVENTS}",
                )
            )
    if ALL_EVENTS in events and len(events) > 1:
        errors.append(FieldError("events", f'"{ALL_EVENTS}" already means every status'))
    if body.format not in formats.names():
        errors.append(
            FieldError(
                "format", f"unknown format {body.format!r}; use {', '.join(formats.names())}"
            )
        )
    if body.secret is not None and len(body.secret) < MIN_SECRET_CHARS:
        errors.append(FieldError("secret", f"must be at least {MIN_SECRET_CHARS} characters"))
    return errors


@router.post("", status_code=201)
async def create(body: WebhookIn, runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Subscribe a URL to status events; the answer shows the signing secret, once."""
    formats = _formats(runtime)
    errors = check_webhook(body, formats)
    if errors:
        raise Problem(422, "the webhook is invalid; see errors", errors=errors)
    secret = body.secret or new_webhook_secret()
    webhook = await create_webhook(
        runtime.database,
        runtime.secret_box,
        url=body.url,
        events=list(
            dict.fromkeys(
                body.events if body.events is not None else formats.default_events(body.format)
            )
        ),
        format=body.format,
        scope=body.scope or ("all" if body.format == "native" else "named"),
        secret=secret,
    )
    return {**webhook_view(webhook), "secret": secret}


@router.get("")
async def list_all(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Every webhook, oldest first."""
    return {"data": [webhook_view(w) for w in await list_webhooks(runtime.database)]}


@router.get("/{webhook_id}")
async def show(
    webhook_id: str,
    deliveries: int = Query(default=50, ge=0, le=500, description="How many recent deliveries."),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """One webhook with its most recent deliveries (newest first) and every try of each."""
    webhook = await get_webhook(runtime.database, webhook_id)
    if webhook is None:
        raise not_found("webhook", webhook_id)
    log = await recent_deliveries(runtime.database, webhook_id, limit=deliveries)
    return {**webhook_view(webhook), "deliveries": [delivery_view(d) for d in log]}


@router.delete("/{webhook_id}", status_code=204)
async def remove(webhook_id: str, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Delete a webhook; its pending deliveries are dropped."""
    if not await delete_webhook(runtime.database, webhook_id):
        raise not_found("webhook", webhook_id)
    return Response(status_code=204)
