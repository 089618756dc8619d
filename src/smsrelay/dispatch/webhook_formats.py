"""What a webhook request carries: one `WebhookFormat` per body shape, looked up by name.

A format turns events into one request body. `max_batch` is how many events one POST may
carry (native: 1, so every event has its own request and dedupe id). Formats are plain
objects kept in a `FormatRegistry`; `register_format` adds one to the registry the
application uses by default (call it while wiring the app, not at import time):

    from smsrelay.dispatch.webhook_formats import register_format
    register_format(MoEngageFormat())

The native format (`NativeFormat`) is::

    {"id": "evt_…", "type": "message.delivered", "created_at": "2024-06-01T12:00:00+00:00",
     "data": {"message_id", "status", "previous_status", "to", "connector", "sender",
              "sender_id", "campaign_id", "provider_ids", "failure_reason", "error_code",
              "segments", "status_at"}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from smsrelay.store.webhooks import ALL_EVENTS, StoredWebhook, WebhookEvent

JSON_CONTENT_TYPE = "application/json"


class WebhookFormat(Protocol):
    """A request body shape for webhook events."""

    @property
    def name(self) -> str:
        """The format's name, as given in `POST /v1/webhooks` (`native`, `moengage`, …)."""
        ...

    @property
    def max_batch(self) -> int:
        """How many events one request may carry."""
        ...

    @property
    def default_events(self) -> tuple[str, ...]:
        """The statuses a webhook of this format gets when created without `events`."""
        ...

    def render(self, events: Sequence[WebhookEvent], webhook: StoredWebhook) -> tuple[bytes, str]:
        """The request body for `events` (at most `max_batch`) and its content type.

        An empty body means the receiver has no use for these events: nothing is posted
        and the deliveries are logged as `skipped`.
        """
        ...


class UnknownFormat(LookupError):
    """No format of that name is registered."""


class FormatRegistry:
    """Webhook formats by name."""

    def __init__(self, formats: Iterable[WebhookFormat] = ()) -> None:
        self._formats: dict[str, WebhookFormat] = {}
        for fmt in formats:
            self.register(fmt)

    def register(self, fmt: WebhookFormat) -> None:
        """Add `fmt` (replacing a format of the same name)."""
        if fmt.max_batch < 1:
            raise ValueError(f"webhook format {fmt.name!r}: max_batch must be at least 1")
        self._formats[fmt.name] = fmt

    def get(self, name: str) -> WebhookFormat:
        """The format called `name`; raises UnknownFormat naming the known ones."""
        try:
            return self._formats[name]
        except KeyError:
            raise UnknownFormat(
                f"unknown webhook format {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._formats)

    def max_batch(self, name: str) -> int:
        """How many events one request of format `name` carries (1 for unknown names)."""
        fmt = self._formats.get(name)
        return fmt.max_batch if fmt is not None else 1

    def default_events(self, name: str) -> tuple[str, ...]:
        """What a webhook of format `name` subscribes to by default (all for unknown names)."""
        fmt = self._formats.get(name)
        return fmt.default_events if fmt is not None else (ALL_EVENTS,)


def native_event(event: WebhookEvent) -> dict[str, Any]:
    """One event in the native shape (pure)."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "data": {
            "message_id": event.message_id,
            "status": event.status,
            "previous_status": event.previous_status,
            "to": event.to,
            "connector": event.connector,
            "sender": event.sender,
            "sender_id": event.sender_id,
            "campaign_id": event.campaign_id,
            "provider_ids": list(event.provider_ids),
            "failure_reason": event.failure_reason,
            "error_code": event.error_code,
            "segments": event.segments,
            "status_at": event.status_at.isoformat(),
        },
    }


class NativeFormat:
    """smsrelay's own JSON: one event per request."""

    name = "native"
    max_batch = 1
    default_events = (ALL_EVENTS,)

    def render(self, events: Sequence[WebhookEvent], webhook: StoredWebhook) -> tuple[bytes, str]:
        """The JSON body of one event."""
        if len(events) != 1:
            raise ValueError(f"the native format carries one event per request, not {len(events)}")
        body = json.dumps(native_event(events[0]), ensure_ascii=False, separators=(",", ":"))
        return body.encode("utf-8"), JSON_CONTENT_TYPE


def default_formats() -> FormatRegistry:
    """A registry holding the formats smsrelay ships in this module (native)."""
    return FormatRegistry([NativeFormat()])


_DEFAULT_REGISTRY = default_formats()


def default_registry() -> FormatRegistry:
    """The registry the API and the webhook sender use unless given another."""
    return _DEFAULT_REGISTRY


def register_format(fmt: WebhookFormat) -> None:
    """Add a format to the default registry (call while wiring the application)."""
    _DEFAULT_REGISTRY.register(fmt)
