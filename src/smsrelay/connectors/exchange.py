"""Plain data that crosses the seam between the connector engine and the I/O around it.

`OutboundMessage` goes in to rendering; `HttpRequest` comes out and is performed by
`dispatch.transport`; the provider's answer comes back as `HttpResponse`; a delivery-report
callback arrives as `InboundCallback`. None of these know about aiohttp or the database.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One SMS to render. `to` is E.164 (`+4915112345678`), already validated."""

    message_id: str
    to: str
    body: str | None = None
    sender: str | None = None
    template_id: str | None = None
    template_variables: tuple[str, ...] = ()
    entity_id: str | None = None
    campaign_id: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request exactly as it goes on the wire (headers in order, body as bytes)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    message_ids: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for k, v in self.headers:
            if k.lower() == wanted:
                return v
        return None

    def as_trace(self) -> dict[str, Any]:
        """A JSON-able view (body decoded as UTF-8 with replacement)."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.body.decode("utf-8", "replace"),
        }


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A provider's answer to a send request."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for k, v in self.headers.items():
            if k.lower() == wanted:
                return v
        return None


@dataclass(frozen=True, slots=True)
class InboundCallback:
    """A delivery-report callback as received: enough to parse and to verify it.

    `url` is the full URL the provider called (scheme, host, path and query), as needed for
    URL-based HMAC signatures; `query` is the parsed query string in order.
    """

    method: str
    url: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    content_type: str | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for k, v in self.headers.items():
            if k.lower() == wanted:
                return v
        return None


class SendOutcome(enum.StrEnum):
    """What a send attempt means for a message."""

    ACCEPTED = "accepted"  # provider took it; now `sent`
    RETRY = "retry"  # transient: queue again with backoff
    REJECTED = "rejected"  # permanent: `failed`


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The verdict for one message of a send (a batch has one per message, in order)."""

    outcome: SendOutcome
    provider_ids: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SendVerdict:
    """What a provider's response to one request means, per message."""

    results: tuple[MessageResult, ...]
    retry_after_seconds: float | None = None
    status: int = 0
    summary: str = ""


class DeliveryOutcome(enum.StrEnum):
    """Canonical meaning of a provider status."""

    DELIVERED = "delivered"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One report read from a callback (a callback may carry many).

    `key` is the provider's message id (match `provider_id`) or our own message id echoed
    back (match `message_id`); `recipient`, when mapped, narrows a shared key (Sinch batch id,
    MSG91 request id) to one number, in E.164 where it could be parsed.
    """

    key: str
    outcome: DeliveryOutcome
    raw_status: str
    recipient: str | None = None
    reason: str | None = None
    error_code: str | None = None
    timestamp: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
