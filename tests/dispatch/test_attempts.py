"""What an attempt means per message (pure), and the group-committing writer."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from smsrelay.connectors.definition import Delivery, Retry
from smsrelay.connectors.exchange import HttpRequest, HttpResponse, MessageResult, SendOutcome
from smsrelay.dispatch.attempts import (
    CREDENTIALS_RECHECK_SECONDS,
    exchange_detail,
    record_credentials_failing,
    record_result,
    record_transient,
)
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import ClaimedMessage

AT = datetime(2030, 1, 1, tzinfo=UTC)
RETRY = Retry(max_attempts=3, initial_seconds=2, max_seconds=60)


def claimed(attempts: int = 0) -> ClaimedMessage:
    return ClaimedMessage(
        id="01HZZZZZZZZZZZZZZZZZZZZZZZ",
        connector_id=1,
        to="+4915112340001",
        body="hi",
        sender_id=None,
        template_id=None,
        template_variables=(),
        entity_id=None,
        campaign_id=None,
        params={},
        attempts=attempts,
        segments=1,
        encoding="gsm7",
        previous_status=MessageStatus.QUEUED,
        accepted_before=False,
        lease_expires_at=AT,
    )


def test_accepted_message_is_sent_and_awaits_its_report() -> None:
    delivery = Delivery(message_id="$.id", status="$.status", window_hours=24)
    as_claimed = ("01HZZZZZZZZZZZZZZZZZZZZZZZ", 1, "sending", 0, None, "w", "t", "t", None, None)
    record = record_result(
        replace(claimed(), as_claimed=(*as_claimed, None, 7)),
        MessageResult(SendOutcome.ACCEPTED, provider_ids=("p1",)),
        retry=RETRY,
        retry_after=None,
        at=AT,
        rng=random.Random(0),
        detail={},
        delivery=delivery,
    )
    assert record.outcome == "sent"
    assert record.provider_ids == ("p1",)
    assert record.next_attempt_at == AT + timedelta(hours=24)
    # The row as claimed goes with it: the group commit checks it instead of reading it.
    assert record.as_claimed == (*as_claimed, None, 7)


def test_rejected_message_fails_with_the_providers_error() -> None:
    record = record_result(
        claimed(),
        MessageResult(SendOutcome.REJECTED, error="invalid destination"),
        retry=RETRY,
        retry_after=None,
        at=AT,
        rng=random.Random(0),
        detail={},
        delivery=None,
    )
    assert (record.outcome, record.error, record.next_attempt_at) == (
        "failed",
        "invalid destination",
        None,
    )


def test_transient_failure_is_retried_after_backoff_and_retry_after() -> None:
    record = record_transient(
        claimed(attempts=0),
        "HTTP 429",
        retry=RETRY,
        retry_after=7,
        at=AT,
        rng=random.Random(0),
        detail={},
    )
    assert record.outcome == "retry"
    assert record.next_attempt_at is not None
    assert record.next_attempt_at >= AT + timedelta(seconds=7)


def test_last_allowed_attempt_fails_as_retries_exhausted() -> None:
    record = record_transient(
        claimed(attempts=2),
        "HTTP 503",
        retry=RETRY,
        retry_after=None,
        at=AT,
        rng=random.Random(0),
        detail={},
    )
    assert record.outcome == "failed"
    assert record.error == "retries_exhausted: HTTP 503"


def test_failing_credentials_hold_then_fail_after_the_window() -> None:
    window = RETRY.max_seconds * RETRY.max_attempts  # 180 s, under two re-checks: 240 s
    held = record_credentials_failing(claimed(), "HTTP 401", retry=RETRY, held_since=AT, at=AT)
    assert held.outcome == "dispatch_error"
    assert held.next_attempt_at == AT + timedelta(seconds=CREDENTIALS_RECHECK_SECONDS)
    assert held.error == "credentials_failing: HTTP 401"
    later = AT + timedelta(seconds=max(window, 240) - 1)
    assert record_credentials_failing(
        claimed(), "x", retry=RETRY, held_since=AT, at=later
    ).outcome == ("dispatch_error")
    end = AT + timedelta(seconds=240)
    failed = record_credentials_failing(claimed(), "x", retry=RETRY, held_since=AT, at=end)
    assert (failed.outcome, failed.error) == ("failed", "credentials_failing")


def test_exchange_detail_is_redacted_and_clipped() -> None:
    request = HttpRequest(
        "POST",
        "https://sms.example.com/send?key=k3y-value",
        (("Authorization", "Bearer tok-abc"), ("Content-Type", "application/json")),
        b'{"text": "' + b"x" * 5000 + b'"}',
        message_ids=("a", "b"),
    )
    response = HttpResponse(401, {"X-Echo": "k3y-value"}, b"bad key k3y-value " + b"y" * 5000)
    detail = exchange_detail(
        request, response, elapsed_ms=12.34, secrets={"key": "k3y-value"}, access_token="tok-abc"
    )
    text = repr(detail)
    assert "k3y-value" not in text
    assert "tok-abc" not in text
    assert detail["request"]["url"] == "https://sms.example.com/send?key=***"
    assert len(detail["request"]["body"]) <= 2049
    assert detail["response"]["body"].startswith("bad key ***")
    assert len(detail["response"]["body"]) <= 2049
    assert detail["response"]["status"] == 401
    assert detail["elapsed_ms"] == 12.3
    assert detail["batch_size"] == 2
