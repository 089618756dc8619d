"""Trying a connector: the request one message would produce, or one real test SMS.

A preview renders the request and redacts it; nothing is sent. A test message goes through
the outbox like any other (rate limit, retries, delivery tracking), and the caller waits for
its first attempt and gets that attempt's redacted request and response. The API
(`POST /v1/connectors/{name}/preview` and `/test`) and the dashboard's connector form both
use these; each turns a `RenderError` or a timeout into its own kind of answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smsrelay.connectors.definition import ConnectorDefinition
from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.connectors.redaction import redact_request
from smsrelay.connectors.rendering import RenderEnvironment, compile_connector, render_request
from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.store.connectors import StoredConnector
from smsrelay.store.database import Database
from smsrelay.store.messages import NewMessage, get_message, insert_messages
from smsrelay.store.timestamps import utc_now

TEST_WAIT_SECONDS = 20.0
POLL_SECONDS = 0.05
# An attempt's outcome as the person trying the connector reads it.
VERDICTS = {"sent": "accepted", "retry": "retry", "failed": "rejected"}


def preview_trace(
    definition: ConnectorDefinition, message: OutboundMessage, callback_url: str
) -> dict[str, Any]:
    """The request `message` would produce, secrets and the OAuth2 token redacted.

    Raises `RenderError` when the connector cannot render it (a missing parameter, say).
    """
    env = RenderEnvironment(
        secrets=definition.secrets, callback_url=callback_url, access_token="***"
    )
    request = render_request(compile_connector(definition), [message], env)
    return redact_request(request, definition.secrets).as_trace()


@dataclass
class TestSend:
    """What happened to a test message's first attempt."""

    message_id: str
    status: str
    verdict: str  # accepted | retry | rejected | timeout
    error: str | None = None
    summary: str | None = None
    elapsed_ms: float | None = None
    provider_ids: list[str] = field(default_factory=list)
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None

    @property
    def timed_out(self) -> bool:
        """No dispatcher made an attempt within the wait."""
        return self.verdict == "timeout"


async def send_test_message(
    database: Database,
    stored: StoredConnector,
    message: OutboundMessage,
    *,
    callback_url: str,
    notify: Callable[[], None],
    wait_seconds: float = TEST_WAIT_SECONDS,
) -> TestSend:
    """Queue `message` on the connector, wake the dispatcher, wait for its first attempt.

    Rendered first, so a message the connector cannot render raises `RenderError` and is
    never queued.
    """
    preview_trace(stored.definition, message, callback_url)
    text = analyse_text(message.body or "")
    new = NewMessage(
        id=message.message_id,
        connector_id=stored.id,
        to=message.to,
        created_at=utc_now(),
        body=message.body,
        sender_id=message.sender,
        template_id=message.template_id,
        template_variables=tuple(message.template_variables),
        entity_id=message.entity_id,
        campaign_id=message.campaign_id,
        params=dict(message.params),
        segments=text.segments,
        encoding=text.encoding,
    )
    await insert_messages(database, [new])
    notify()
    return await first_attempt(database, message.message_id, wait_seconds)


async def first_attempt(database: Database, message_id: str, wait_seconds: float) -> TestSend:
    """The message's first attempt as a `TestSend`; verdict `timeout` if none in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    status = "queued"
    while loop.time() < deadline:
        record = await get_message(database, message_id)
        if record is not None:
            status = record.status.value
            for event in record.events:
                if event.kind == "attempt":
                    detail = dict(event.detail or {})
                    outcome = str(detail.get("outcome", ""))
                    return TestSend(
                        message_id=message_id,
                        status=status,
                        verdict=VERDICTS.get(outcome, outcome),
                        error=detail.get("error"),
                        summary=detail.get("summary"),
                        elapsed_ms=detail.get("elapsed_ms"),
                        provider_ids=list(detail.get("provider_ids") or []),
                        request=detail.get("request"),
                        response=detail.get("response"),
                    )
            if status in ("failed", "canceled"):
                return TestSend(message_id, status, "rejected", error=record.failure_reason)
        await asyncio.sleep(POLL_SECONDS)
    return TestSend(
        message_id,
        status,
        "timeout",
        error=(
            f"no dispatcher sent the message within {wait_seconds:.0f} s; is "
            "`smsrelay serve` (with its dispatcher) or `smsrelay worker` running?"
        ),
    )


__all__ = ["TEST_WAIT_SECONDS", "TestSend", "first_attempt", "preview_trace", "send_test_message"]
