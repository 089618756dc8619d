"""The `moengage` and `clevertap` webhook formats: bytes as the platforms document them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from smsrelay.compat.webhook_formats import (
    CleverTapFormat,
    MoEngageFormat,
    register_platform_formats,
)
from smsrelay.dispatch.webhook_formats import FormatRegistry
from smsrelay.store.webhooks import StoredWebhook, WebhookEvent

AT = datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC)
WEBHOOK = StoredWebhook(
    id="wh_1",
    url="https://example.com/dlr",
    format="clevertap",
    events=("delivered", "undelivered", "failed"),
    scope="named",
    active=True,
    created_at=AT,
)


def _event(status: str, **changes: Any) -> WebhookEvent:
    values: dict[str, Any] = {
        "id": "evt_1",
        "type": f"message.{status}",
        "created_at": AT,
        "status": status,
        "previous_status": "sent",
        "status_at": AT,
        "message_id": "01J0B4Q4Z7M9V2K8D3W6X5Y1TR",
        "to": "+919812345678",
        "connector": "sandbox",
        "sender": "otp",
        "sender_id": "TXTSMS",
        "campaign_id": None,
        "webhook_id": "wh_1",
        "provider_ids": ("p1",),
        "failure_reason": None,
        "error_code": None,
        "segments": 1,
    }
    values.update(changes)
    return WebhookEvent(**values)


def test_moengage_gets_one_object_with_id_status_and_reason() -> None:
    body, content_type = MoEngageFormat().render(
        [_event("undelivered", failure_reason="absent_subscriber", params={"custom": "c-1"})],
        WEBHOOK,
    )
    assert content_type == "application/json"
    assert json.loads(body) == {
        "message_id": "01J0B4Q4Z7M9V2K8D3W6X5Y1TR",
        "status": "undelivered",
        "reason": "absent_subscriber",
        "error_code": None,
        "to": "+919812345678",
        "timestamp": "2024-06-01T12:00:05+00:00",
        "event_id": "evt_1",
        "custom": "c-1",
    }


def test_moengage_body_stays_under_150_kb() -> None:
    body, _ = MoEngageFormat().render([_event("failed", failure_reason="x" * 500_000)], WEBHOOK)
    assert len(body) < 150 * 1024
    delivered, _ = MoEngageFormat().render([_event("delivered")], WEBHOOK)
    assert json.loads(delivered)["reason"] is None


def test_clevertap_gets_an_array_grouped_by_event_with_mid_as_meta() -> None:
    events = [
        _event("delivered", params={"mid": "m-1"}),
        _event("undelivered", failure_reason="DND failure", params={"mid": "m-2"}),
        _event("failed", failure_reason="retries_exhausted: HTTP 500", params={"mid": "m-3"}),
        _event("sent", params={"mid": "m-4"}),
        _event("delivered", message_id="01J0B4Q4Z7M9V2K8D3W6X5Y1TS"),
    ]
    body, content_type = CleverTapFormat().render(events, WEBHOOK)
    assert content_type == "application/json"
    assert json.loads(body) == [
        {
            "event": "delivered",
            "data": [
                {"ts": 1717243205, "meta": "m-1", "description": "Delivered to handset"},
                {
                    "ts": 1717243205,
                    "meta": "01J0B4Q4Z7M9V2K8D3W6X5Y1TS",
                    "description": "Delivered to handset",
                },
            ],
        },
        {
            "event": "failed",
            "data": [
                {"ts": 1717243205, "meta": "m-2", "code": "901", "description": "DND failure"},
                {
                    "ts": 1717243205,
                    "meta": "m-3",
                    "code": "904",
                    "description": "Failed system error",
                },
            ],
        },
    ]


def test_the_platform_formats_register_with_their_batch_sizes() -> None:
    registry = FormatRegistry()
    register_platform_formats(registry)
    assert registry.names() == ["clevertap", "moengage"]
    assert registry.max_batch("moengage") == 1
    assert registry.max_batch("clevertap") == 100
