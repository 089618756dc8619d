"""Trying a connector from the form: render a preview, send one real test SMS and trace it.

The test message goes through the outbox like any other (rate limit, retries, delivery
tracking); the dashboard waits for its first attempt and shows that attempt's redacted
request and response. The same steps live in `api.connectors` (`preview_request`,
`send_test`); both should call one shared module in `dispatch` (reported to the lead).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from smsrelay.connectors.definition import ConnectorDefinition
from smsrelay.connectors.errors import FieldError, RenderError
from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.connectors.redaction import redact_request
from smsrelay.connectors.rendering import RenderEnvironment, compile_connector, render_request
from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.runtime import Runtime
from smsrelay.store.connectors import StoredConnector
from smsrelay.store.messages import NewMessage, get_message, insert_messages, new_message_id
from smsrelay.store.timestamps import utc_now

PREVIEW_MESSAGE_ID = "PREVIEW0000000000000000000"
TEST_WAIT_SECONDS = 20.0
MAX_TEST_BODY = 1600


class TrialRefused(Exception):
    """The sample cannot be rendered or sent; `errors` say which input to fix."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True, slots=True)
class Sample:
    """The sample message typed into the preview or test panel."""

    region: str
    number: str
    body: str
    sender: str | None = None


def sample_message(sample: Sample, message_id: str) -> OutboundMessage:
    """The sample as an OutboundMessage; raises TrialRefused naming the bad input."""
    errors: list[FieldError] = []
    to = ""
    try:
        to = normalise_phone(sample.number, sample.region or None)
    except InvalidPhoneNumber as exc:
        errors.append(FieldError("number", str(exc)))
    if not sample.body.strip():
        errors.append(FieldError("body", "type the text of the message"))
    elif len(sample.body) > MAX_TEST_BODY:
        errors.append(FieldError("body", f"is longer than {MAX_TEST_BODY} characters"))
    if errors:
        raise TrialRefused(errors)
    return OutboundMessage(message_id=message_id, to=to, body=sample.body, sender=sample.sender)


def render_preview(
    definition: ConnectorDefinition, message: OutboundMessage, callback_url: str
) -> dict[str, Any]:
    """The request one message would produce, secrets redacted; TrialRefused if it cannot."""
    compiled = compile_connector(definition)
    env = RenderEnvironment(
        secrets=definition.secrets, callback_url=callback_url, access_token="***"
    )
    try:
        request = render_request(compiled, [message], env)
    except RenderError as exc:
        raise TrialRefused([FieldError("connector", f"{exc.detail} ({exc.reason})")]) from exc
    text = analyse_text(message.body or "")
    return {
        **redact_request(request, definition.secrets).as_trace(),
        "encoding": text.encoding,
        "segments": text.segments,
    }


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


async def send_test_message(
    runtime: Runtime, stored: StoredConnector, message: OutboundMessage
) -> TestSend:
    """Queue one test message on the connector, wait for its first attempt, trace it."""
    render_preview(stored.definition, message, runtime.callback_url(stored.dlr_token))
    text = analyse_text(message.body or "")
    await insert_messages(
        runtime.database,
        [
            NewMessage(
                id=message.message_id,
                connector_id=stored.id,
                to=message.to,
                created_at=utc_now(),
                body=message.body,
                sender_id=message.sender,
                segments=text.segments,
                encoding=text.encoding,
            )
        ],
    )
    runtime.notify_dispatcher()
    return await _first_attempt(runtime, message.message_id)


async def _first_attempt(runtime: Runtime, message_id: str) -> TestSend:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TEST_WAIT_SECONDS
    verdicts = {"sent": "accepted", "retry": "retry", "failed": "rejected"}
    status = "queued"
    while loop.time() < deadline:
        record = await get_message(runtime.database, message_id)
        if record is not None:
            status = record.status.value
            for event in record.events:
                if event.kind == "attempt":
                    detail = dict(event.detail or {})
                    outcome = str(detail.get("outcome", ""))
                    return TestSend(
                        message_id=message_id,
                        status=status,
                        verdict=verdicts.get(outcome, outcome),
                        error=detail.get("error"),
                        summary=detail.get("summary"),
                        elapsed_ms=detail.get("elapsed_ms"),
                        provider_ids=list(detail.get("provider_ids") or []),
                        request=detail.get("request"),
                        response=detail.get("response"),
                    )
            if status in ("failed", "canceled"):
                return TestSend(message_id, status, "rejected", error=record.failure_reason)
        await asyncio.sleep(0.05)
    return TestSend(
        message_id,
        status,
        "timeout",
        error=(
            f"no dispatcher sent the message within {TEST_WAIT_SECONDS:.0f} s; is "
            "`smsrelay serve` (with its dispatcher) or `smsrelay worker` running?"
        ),
    )


def new_test_message_id() -> str:
    """A fresh message id for a test send."""
    return new_message_id()
