"""What the sandbox remembers: received messages, the raw requests, the callbacks it made.

In memory and bounded: the log keeps the newest `capacity` messages and forgets the oldest.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from smsrelay.sandbox.intake import Api

RAW_BODY_LIMIT = 64 * 1024


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`: `2024-05-01T12:00:00.123Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A send request exactly as received (body cut at 64 KiB); shared by a batch's messages."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: str
    body_truncated: bool = False

    @classmethod
    def capture(
        cls, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawRequest:
        """Keep a received request, decoding the body as UTF-8 (bad bytes replaced)."""
        return cls(
            method=method,
            path=path,
            query=query,
            headers=tuple(headers),
            body=body[:RAW_BODY_LIMIT].decode("utf-8", errors="replace"),
            body_truncated=len(body) > RAW_BODY_LIMIT,
        )

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON document; repeated headers are joined with a comma."""
        headers: dict[str, str] = {}
        for name, value in self.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body": self.body,
            "body_truncated": self.body_truncated,
        }


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One try at delivering one report to a callback URL, and what came of it."""

    at: datetime
    url: str
    status: str
    attempt: int
    payload: dict[str, Any]
    http_status: int | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.http_status is not None and 200 <= self.http_status < 300

    def to_json(self) -> dict[str, Any]:
        """The attempt as a JSON document."""
        return {
            "at": iso_utc(self.at),
            "url": self.url,
            "status": self.status,
            "attempt": self.attempt,
            "payload": self.payload,
            "http_status": self.http_status,
            "error": self.error,
            "succeeded": self.succeeded,
        }


@dataclass(slots=True)
class SandboxMessage:
    """One message the sandbox received, with its answer, status history and callbacks.

    `status` is `accepted` and then the latest report sent (`sent`, `delivered`,
    `undelivered`, `rejected`); `rejected` with `http_status` 400 for an invalid
    destination; `error` when the whole request was answered 429/500 or reset.
    """

    id: str
    api: Api
    to: str
    body: str
    sender: str | None
    client_ref: str | None
    callback_url: str | None
    segments: int
    encoding: str
    outcome: str
    received_at: datetime
    request: RawRequest
    status: str
    http_status: int | None
    reason: str | None = None
    error_code: str | None = None
    account_sid: str | None = None  # Twilio-style sends only
    history: list[tuple[str, datetime]] = field(default_factory=list)
    callbacks: list[CallbackAttempt] = field(default_factory=list)

    def set_status(
        self, status: str, at: datetime, reason: str | None = None, error_code: str | None = None
    ) -> None:
        """Move to a status, keeping it in the history."""
        self.status = status
        self.reason = reason
        self.error_code = error_code
        self.history.append((status, at))

    def to_json(self, *, with_request: bool = True) -> dict[str, Any]:
        """The message as a JSON document, as the sandbox API shows it."""
        doc: dict[str, Any] = {
            "id": self.id,
            "api": str(self.api),
            "to": self.to,
            "from": self.sender,
            "body": self.body,
            "client_ref": self.client_ref,
            "callback_url": self.callback_url,
            "segments": self.segments,
            "encoding": self.encoding,
            "outcome": self.outcome,
            "received_at": iso_utc(self.received_at),
            "http_status": self.http_status,
            "status": self.status,
            "reason": self.reason,
            "error_code": self.error_code,
            "history": [{"status": s, "at": iso_utc(at)} for s, at in self.history],
            "callbacks": [c.to_json() for c in self.callbacks],
        }
        if with_request:
            doc["request"] = self.request.to_json()
        return doc


@dataclass(frozen=True, slots=True)
class PhoneSummary:
    """One recipient number and how many kept messages went to it."""

    number: str
    messages: int
    last_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON document."""
        return {"number": self.number, "messages": self.messages, "last_at": iso_utc(self.last_at)}


class MessageLog:
    """The newest `capacity` messages, by id and by recipient; the oldest are forgotten."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_id: OrderedDict[str, SandboxMessage] = OrderedDict()
        self._by_phone: dict[str, deque[str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, message: SandboxMessage) -> None:
        """Keep a message, forgetting the oldest one when full."""
        self._by_id[message.id] = message
        self._by_phone.setdefault(message.to, deque()).append(message.id)
        while len(self._by_id) > self.capacity:
            _, oldest = self._by_id.popitem(last=False)
            ids = self._by_phone[oldest.to]
            # Insertion order is global, so the oldest message is also its phone's oldest.
            ids.popleft()
            if not ids:
                del self._by_phone[oldest.to]

    def get(self, message_id: str) -> SandboxMessage | None:
        """A kept message by id."""
        return self._by_id.get(message_id)

    def newest(self, *, to: str | None = None, limit: int = 100) -> list[SandboxMessage]:
        """Kept messages, newest first, optionally only those to one number."""
        if to is None:
            ids: Any = reversed(self._by_id)
        else:
            ids = reversed(self._by_phone.get(self.resolve_number(to), ()))
        found: list[SandboxMessage] = []
        for message_id in ids:
            if len(found) >= limit:
                break
            found.append(self._by_id[message_id])
        return found

    def resolve_number(self, number: str) -> str:
        """The kept spelling of a number; a `+` decoded as a space in a URL is forgiven."""
        number = number.strip()
        if number not in self._by_phone and f"+{number}" in self._by_phone:
            return f"+{number}"
        return number

    def phones(self) -> list[PhoneSummary]:
        """Every number with kept messages, most recently used first."""
        summaries = [
            PhoneSummary(number, len(ids), self._by_id[ids[-1]].received_at)
            for number, ids in self._by_phone.items()
        ]
        summaries.sort(key=lambda s: s.last_at, reverse=True)
        return summaries

    def clear(self) -> int:
        """Forget every message; returns how many there were."""
        count = len(self._by_id)
        self._by_id.clear()
        self._by_phone.clear()
        return count
