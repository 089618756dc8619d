"""What one send attempt means for each message, as `AttemptRecord`s (pure).

The sender loop calls these with what happened (a verdict, a transport error, a render
failure, failing credentials) and gets back the records to store: outcome, provider ids,
error, next attempt time, and a redacted summary of the exchange.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from smsrelay.connectors.definition import ConnectorDefinition, Delivery, Retry
from smsrelay.connectors.errors import RenderError
from smsrelay.connectors.exchange import (
    HttpRequest,
    HttpResponse,
    MessageResult,
    SendOutcome,
)
from smsrelay.connectors.redaction import redact_request, redactor
from smsrelay.connectors.responses import parse_send_response
from smsrelay.dispatch.backoff import is_exhausted, next_attempt_delay
from smsrelay.dispatch.transport import TransportError
from smsrelay.fast_dataclasses import positional_builder
from smsrelay.store.messages import AttemptRecord, ClaimedMessage

TRACE_BODY_BYTES = 2048
# A connector whose credentials fail is re-validated this often (SPEC §3).
CREDENTIALS_RECHECK_SECONDS = 120.0
ALREADY_ACCEPTED_NOTE = "already accepted before a worker restart; not sent again"


def _clip(body: bytes) -> str:
    text = body[:TRACE_BODY_BYTES].decode("utf-8", "replace")
    return text + ("…" if len(body) > TRACE_BODY_BYTES else "")


@functools.lru_cache(maxsize=1024)
def _shown_head(
    method: str, url: str, headers: tuple[tuple[str, str], ...], hidden: tuple[str, ...]
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A request's URL and headers as the trace shows them (redacted).

    A connector sends the same URL and headers (its credentials among them) with every
    request: they are redacted once, not once per message. Pure, so safe to remember.
    """
    shown = redact_request(HttpRequest(method, url, headers, b""), {}, extra=hidden)
    return shown.url, shown.headers


def exchange_detail(
    request: HttpRequest,
    response: HttpResponse | None,
    *,
    elapsed_ms: float,
    secrets: Mapping[str, str],
    access_token: str | None = None,
    summary: str = "",
) -> dict[str, Any]:
    """A JSON-able, redacted summary of one request and its response for the message history.

    Bodies are cut to 2 KiB; every connector secret (and the OAuth2 token) is masked, in the
    response too, since some providers echo credentials back.
    """
    hidden = (*secrets.values(), access_token) if access_token else tuple(secrets.values())
    redact = redactor(tuple(secret for secret in hidden if secret))
    url, headers = _shown_head(request.method, request.url, request.headers, hidden)
    detail: dict[str, Any] = {
        "request": {
            "method": request.method,
            "url": url,
            "headers": [[k, v] for k, v in headers],
            "body": _clip(redact.body(request.body)),
        },
        "elapsed_ms": round(elapsed_ms, 1),
        "batch_size": max(1, len(request.message_ids)),
    }
    if response is not None:
        text = redact.text
        detail["response"] = {
            "status": response.status,
            "headers": {k: text(v) for k, v in response.headers.items()},
            "body": text(_clip(response.body)),
        }
    if summary:
        detail["summary"] = summary
    return detail


def report_deadline(delivery: Delivery | None, at: datetime) -> datetime | None:
    """When a sent message with no final delivery report becomes `unconfirmed`.

    None when the connector maps no delivery reports (none are expected).
    """
    if delivery is None:
        return None
    return at + _hours(delivery.window_hours)


@functools.lru_cache(maxsize=64)
def _hours(hours: float) -> timedelta:
    return timedelta(hours=hours)


def record_sent(
    message: ClaimedMessage,
    provider_ids: Sequence[str],
    at: datetime,
    detail: Mapping[str, Any],
    *,
    delivery: Delivery | None,
) -> AttemptRecord:
    """The provider accepted the message; its report is awaited until the deadline."""
    return _sent(message, provider_ids, at, detail, report_deadline(delivery, at))


def _sent(
    message: ClaimedMessage,
    provider_ids: Sequence[str],
    at: datetime,
    detail: Mapping[str, Any],
    deadline: datetime | None,
) -> AttemptRecord:
    # One per message of a batch answer: positional, as `_new_record` lists the fields.
    record: AttemptRecord = _new_record(
        message.id,
        "sent",
        tuple(provider_ids),
        message.to,
        None,
        deadline,
        detail,
        at,
        message.as_claimed,
    )
    return record


_new_record = positional_builder(
    AttemptRecord,
    (
        "message_id",
        "outcome",
        "provider_ids",
        "recipient",
        "error",
        "next_attempt_at",
        "detail",
        "at",
        "as_claimed",
    ),
)


def record_failed(
    message: ClaimedMessage, error: str, at: datetime, detail: Mapping[str, Any]
) -> AttemptRecord:
    """The message will not be sent: `error` is the failure reason."""
    return AttemptRecord(
        message_id=message.id,
        outcome="failed",
        provider_ids=(),
        recipient=message.to,
        error=error,
        next_attempt_at=None,
        detail=detail,
        at=at,
    )


def record_transient(
    message: ClaimedMessage,
    error: str,
    *,
    retry: Retry,
    retry_after: float | None,
    at: datetime,
    rng: random.Random,
    detail: Mapping[str, Any],
) -> AttemptRecord:
    """A transient failure: queue again with backoff, or fail when attempts are used up."""
    made = message.attempts + 1  # this attempt included
    if is_exhausted(made, retry):
        return record_failed(message, f"retries_exhausted: {error}", at, detail)
    delay = next_attempt_delay(made, retry, retry_after, rng)
    return AttemptRecord(
        message_id=message.id,
        outcome="retry",
        provider_ids=(),
        recipient=message.to,
        error=error,
        next_attempt_at=at + timedelta(seconds=delay),
        detail={**detail, "retry_in_seconds": round(delay, 3)},
        at=at,
    )


def record_result(
    message: ClaimedMessage,
    result: MessageResult,
    *,
    retry: Retry,
    retry_after: float | None,
    at: datetime,
    rng: random.Random,
    detail: Mapping[str, Any],
    delivery: Delivery | None,
) -> AttemptRecord:
    """The record for one message's verdict from the provider's response."""
    if result.outcome is SendOutcome.ACCEPTED:
        return record_sent(message, result.provider_ids, at, detail, delivery=delivery)
    error = result.error or "rejected by the provider"
    if result.outcome is SendOutcome.RETRY:
        return record_transient(
            message, error, retry=retry, retry_after=retry_after, at=at, rng=rng, detail=detail
        )
    return record_failed(message, error, at, detail)


def record_already_accepted(
    message: ClaimedMessage, at: datetime, *, delivery: Delivery | None
) -> AttemptRecord:
    """A message the provider accepted before a crash: recorded as sent, never resent."""
    return record_sent(message, (), at, {"note": ALREADY_ACCEPTED_NOTE}, delivery=delivery)


def record_render_failure(
    message: ClaimedMessage, error: RenderError, at: datetime
) -> AttemptRecord:
    """A message that cannot be rendered fails with the reason (`missing_parameter:NAME`)."""
    return record_failed(message, error.reason, at, {"render_error": error.detail})


def credentials_window_seconds(retry: Retry) -> float:
    """How long messages are held for failing credentials before they fail.

    The retry policy's own horizon, `max_seconds * max_attempts` (30 minutes with the
    defaults), but at least two re-validations.
    """
    return max(retry.max_seconds * retry.max_attempts, 2 * CREDENTIALS_RECHECK_SECONDS)


def record_credentials_failing(
    message: ClaimedMessage,
    detail_text: str,
    *,
    retry: Retry,
    held_since: datetime | None,
    at: datetime,
    detail: Mapping[str, Any] | None = None,
) -> AttemptRecord:
    """Hold a message while the connector's credentials fail (`dispatch_error`).

    Not counted as an attempt; re-validated every 120 s; failed `credentials_failing` once
    held longer than `credentials_window_seconds`.
    """
    since = held_since or at
    held = {**(detail or {}), "credentials_error": detail_text, "held_since": since.isoformat()}
    if (at - since).total_seconds() >= credentials_window_seconds(retry):
        return record_failed(message, "credentials_failing", at, held)
    return AttemptRecord(
        message_id=message.id,
        outcome="dispatch_error",
        provider_ids=(),
        recipient=message.to,
        error=f"credentials_failing: {detail_text}",
        next_attempt_at=at + timedelta(seconds=CREDENTIALS_RECHECK_SECONDS),
        detail=held,
        at=at,
    )


def records_for_exchange(
    messages: Sequence[ClaimedMessage],
    response: HttpResponse | None,
    error: TransportError | None,
    *,
    definition: ConnectorDefinition,
    at: datetime,
    rng: random.Random,
    detail: Mapping[str, Any],
    access_token: str | None = None,
) -> list[AttemptRecord]:
    """What a provider's answer (or the transport error instead) means for each message.

    A transport error applies to every message of the request: retried with backoff when
    `retryable`, failed otherwise (a refused address, a broken URL). Error texts are
    redacted like the trace: providers echo credentials in their errors.
    """
    retry = definition.retry
    secrets = definition.secrets
    hidden = (*secrets.values(), access_token) if access_token else tuple(secrets.values())
    redact = redactor(hidden).text
    if response is None:
        assert error is not None, "either a response or a transport error"
        reason = redact(str(error))
        failed = {**detail, "transport_error": reason}
        if not error.retryable:
            return [record_failed(m, reason, at, failed) for m in messages]
        return [
            record_transient(
                m, reason, retry=retry, retry_after=None, at=at, rng=rng, detail=failed
            )
            for m in messages
        ]
    verdict = parse_send_response(definition.response, response, len(messages), now=at)
    answered = {**detail, "summary": redact(verdict.summary)}
    # One deadline for the whole request: every message was accepted at the same instant.
    delivery = definition.delivery
    deadline = report_deadline(delivery, at)
    accepted = SendOutcome.ACCEPTED
    return [
        _sent(m, result.provider_ids, at, answered, deadline)
        if result.outcome is accepted
        else record_result(
            m,
            replace(result, error=redact(result.error)) if result.error else result,
            retry=retry,
            retry_after=verdict.retry_after_seconds,
            at=at,
            rng=rng,
            detail=answered,
            delivery=delivery,
        )
        for m, result in zip(messages, verdict.results, strict=True)
    ]
