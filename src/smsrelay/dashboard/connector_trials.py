"""Trying a connector from the form: render a preview, send one real test SMS and trace it.

The test message goes through the outbox like any other (rate limit, retries, delivery
tracking); the dashboard waits for its first attempt and shows that attempt's redacted
request and response. The steps themselves are `dispatch.connector_trials`, shared with the
API; this module reads the form's sample and places errors by the form's fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smsrelay.connectors.definition import ConnectorDefinition
from smsrelay.connectors.errors import FieldError, RenderError
from smsrelay.connectors.exchange import OutboundMessage
from smsrelay.connectors.phone import InvalidPhoneNumber, normalise_phone
from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.dispatch import connector_trials
from smsrelay.dispatch.connector_trials import TestSend, preview_trace
from smsrelay.runtime import Runtime
from smsrelay.store.connectors import StoredConnector
from smsrelay.store.messages import new_message_id

PREVIEW_MESSAGE_ID = "PREVIEW0000000000000000000"
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
    try:
        trace = preview_trace(definition, message, callback_url)
    except RenderError as exc:
        raise TrialRefused([FieldError("connector", f"{exc.detail} ({exc.reason})")]) from exc
    text = analyse_text(message.body or "")
    return {**trace, "encoding": text.encoding, "segments": text.segments}


async def send_test_message(
    runtime: Runtime, stored: StoredConnector, message: OutboundMessage
) -> TestSend:
    """Queue one test message on the connector, wait for its first attempt, trace it."""
    try:
        return await connector_trials.send_test_message(
            runtime.database,
            stored,
            message,
            callback_url=runtime.callback_url(stored.dlr_token),
            notify=runtime.notify_dispatcher,
        )
    except RenderError as exc:
        raise TrialRefused([FieldError("connector", f"{exc.detail} ({exc.reason})")]) from exc


def new_test_message_id() -> str:
    """A fresh message id for a test send."""
    return new_message_id()
