"""Delivery reports in the shapes MoEngage and CleverTap read: webhook formats (pure).

`moengage` — one JSON object per POST, sent to MoEngage's delivery-tracking URL (a webhook
created with that URL; messages name it with `webhook_id`)::

    {"message_id": "01J0…", "status": "delivered", "reason": null, "error_code": null,
     "to": "+919812345678", "timestamp": "2024-06-01T12:00:05+00:00", "custom": "…",
     "event_id": "evt_01j0…"}

In MoEngage's delivery-tracking mapping: unique id `message_id` (the id our send answer
gave), status `status`, success value `delivered`, failure reason `reason`. Every other
status (`undelivered`, `failed`, …) is a failure to MoEngage, so the webhook should
subscribe to final statuses only. A body stays under MoEngage's 150 KB: only `reason` and
`custom` can grow, and they are cut.

`clevertap` — CleverTap's generic SMS callback: a JSON array, up to 100 events per POST::

    [{"event": "delivered", "data": [{"ts": 1717243205, "meta": "<mid>",
                                      "description": "Delivered to handset"}]},
     {"event": "failed", "data": [{"ts": 1717243207, "meta": "<mid>", "code": "901",
                                   "description": "DND failure"}]}]

`meta` is the `mid` CleverTap sent ($$MessageID), `code` and `description` come from
`compat.failure_codes`. `undelivered` and `failed` are CleverTap's `failed`; `unconfirmed`
and `canceled` are `failed` with code 900; `sent` and `dispatch_error` have no CleverTap
event and are left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from smsrelay.compat.failure_codes import OTHER_FAILURE_CODE, clevertap_failure
from smsrelay.dispatch.webhook_formats import (
    JSON_CONTENT_TYPE,
    FormatRegistry,
    WebhookFormat,
    default_registry,
)
from smsrelay.store.webhooks import ALL_EVENTS, StoredWebhook, WebhookEvent

# The message param holding CleverTap's `mid` ($$MessageID), set by `compat.clevertap`.
MID_PARAM = "mid"
MOENGAGE_MAX_BYTES = 150 * 1024
MOENGAGE_SUCCESS_VALUE = "delivered"
CLEVERTAP_MAX_BATCH = 100  # CleverTap: "a maximum batch size of 100 records"
_MAX_REASON_CHARS = 1000
_MAX_CUSTOM_CHARS = 255
DELIVERED_DESCRIPTION = "Delivered to handset"
# Statuses CleverTap hears as `failed` although no provider reported a failure.
_CLEVERTAP_OTHER_FAILURES = {
    "unconfirmed": "No delivery report from the provider within the delivery window",
    "canceled": "Canceled before it was sent",
}


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _reason(event: WebhookEvent) -> str | None:
    if event.status == "delivered":
        return None
    reason = event.failure_reason or event.detail.get("reason")
    return str(reason) if reason is not None else None


def moengage_report(event: WebhookEvent) -> dict[str, Any]:
    """One event as MoEngage's delivery-tracking body (pure)."""
    report: dict[str, Any] = {
        "message_id": event.message_id,
        "status": event.status,
        "reason": _clip(_reason(event), _MAX_REASON_CHARS),
        "error_code": event.error_code,
        "to": event.to,
        "timestamp": event.status_at.isoformat(),
        "event_id": event.id,
    }
    custom = event.params.get("custom")
    if custom is not None:
        report["custom"] = _clip(custom, _MAX_CUSTOM_CHARS)
    return report


class MoEngageFormat:
    """MoEngage's delivery tracking: one JSON object per message per POST."""

    name = "moengage"
    max_batch = 1
    # MoEngage reads every status but its success value as a failure: a `sent` event would
    # count a message as failed before its delivery report.
    default_events = ("delivered", "undelivered", "failed")

    def render(self, events: Sequence[WebhookEvent], webhook: StoredWebhook) -> tuple[bytes, str]:
        """The JSON body of one event (under 150 KB)."""
        if len(events) != 1:
            raise ValueError(
                f"the moengage format carries one event per request, not {len(events)}"
            )
        body = _dumps(moengage_report(events[0]))
        if len(body) > MOENGAGE_MAX_BYTES:  # only an absurd error code could do this
            body = _dumps({**moengage_report(events[0]), "error_code": None})
        return body, JSON_CONTENT_TYPE


def clevertap_entry(event: WebhookEvent) -> tuple[str, dict[str, Any]] | None:
    """One event as CleverTap's (event name, data item), or None if CleverTap has no event."""
    item: dict[str, Any] = {
        "ts": int(event.status_at.timestamp()),
        "meta": event.params.get(MID_PARAM) or event.message_id,
    }
    if event.status == "delivered":
        return "delivered", {**item, "description": DELIVERED_DESCRIPTION}
    if event.status in ("undelivered", "failed"):
        code, description = clevertap_failure(
            event.failure_reason, event.error_code, undelivered=event.status == "undelivered"
        )
        return "failed", {
            **item,
            "code": code,
            "description": _clip(description, _MAX_REASON_CHARS),
        }
    other = _CLEVERTAP_OTHER_FAILURES.get(event.status)
    if other is not None:
        return "failed", {**item, "code": OTHER_FAILURE_CODE, "description": other}
    return None


def clevertap_callback(events: Sequence[WebhookEvent]) -> list[dict[str, Any]]:
    """Events as CleverTap's callback array: one entry per event name, in first-seen order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        entry = clevertap_entry(event)
        if entry is not None:
            grouped.setdefault(entry[0], []).append(entry[1])
    return [{"event": name, "data": data} for name, data in grouped.items()]


class CleverTapFormat:
    """CleverTap's generic SMS callback: a JSON array of events, up to 100 per POST."""

    name = "clevertap"
    max_batch = CLEVERTAP_MAX_BATCH
    default_events = (ALL_EVENTS,)  # statuses CleverTap has no event for are skipped

    def render(self, events: Sequence[WebhookEvent], webhook: StoredWebhook) -> tuple[bytes, str]:
        """The JSON array for up to 100 events."""
        return _dumps(clevertap_callback(events)), JSON_CONTENT_TYPE


def platform_formats() -> list[WebhookFormat]:
    """The webhook formats of the platforms smsrelay stands behind."""
    return [MoEngageFormat(), CleverTapFormat()]


def register_platform_formats(registry: FormatRegistry | None = None) -> None:
    """Add the `moengage` and `clevertap` formats (to the default registry unless given one)."""
    target = registry if registry is not None else default_registry()
    for fmt in platform_formats():
        target.register(fmt)


__all__ = [
    "MID_PARAM",
    "CleverTapFormat",
    "MoEngageFormat",
    "clevertap_callback",
    "clevertap_entry",
    "moengage_report",
    "platform_formats",
    "register_platform_formats",
]
