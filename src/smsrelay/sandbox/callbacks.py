"""Delivery-report callbacks: the payload in each format, and posting it with retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp

from smsrelay.sandbox.intake import Api
from smsrelay.sandbox.messages import CallbackAttempt, SandboxMessage, iso_utc
from smsrelay.sandbox.outcomes import PlannedReport

log = logging.getLogger(__name__)

# Twilio calls a final failure "failed" and has no "rejected".
TWILIO_STATUSES = {"delivered": "delivered", "undelivered": "undelivered", "rejected": "failed"}


def native_report(message: SandboxMessage, report: PlannedReport, at: datetime) -> dict[str, Any]:
    """The sandbox's own JSON report: id, client_ref, to, status, reason, error_code, timestamp."""
    return {
        "id": message.id,
        "client_ref": message.client_ref,
        "to": message.to,
        "status": report.status,
        "reason": report.reason,
        "error_code": report.error_code,
        "timestamp": iso_utc(at),
    }


def twilio_report(message: SandboxMessage, report: PlannedReport) -> dict[str, str]:
    """A Twilio-style status callback form: MessageSid, MessageStatus, To, ErrorCode, ..."""
    status = TWILIO_STATUSES.get(report.status, report.status)
    form = {
        "MessageSid": message.id,
        "SmsSid": message.id,
        "AccountSid": message.account_sid or "",
        "MessageStatus": status,
        "SmsStatus": status,
        "To": message.to,
        "From": message.sender or "",
        "ApiVersion": "2010-04-01",
    }
    if report.error_code:
        form["ErrorCode"] = report.error_code
    return form


async def deliver_report(
    session: aiohttp.ClientSession,
    message: SandboxMessage,
    report: PlannedReport,
    *,
    url: str,
    at: datetime,
    clock: Callable[[], datetime],
    attempts: int,
    retry_seconds: float,
    timeout_seconds: float,
) -> bool:
    """POST one report to `url`, retrying with doubling backoff; every try is recorded.

    `at` is the report's timestamp. Only that URL is ever called: redirects are not
    followed (a 3xx counts as a failure). Returns whether the receiver answered 2xx.
    """
    message.set_status(report.status, at, report.reason, report.error_code)
    as_form = message.api is Api.TWILIO
    payload: dict[str, Any] = (
        dict(twilio_report(message, report)) if as_form else native_report(message, report, at)
    )
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    for attempt in range(1, attempts + 1):
        http_status: int | None = None
        error: str | None = None
        try:
            async with session.post(
                url,
                data=payload if as_form else None,
                json=None if as_form else payload,
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                await answer.read()
                http_status = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        result = CallbackAttempt(
            at=clock(),
            url=url,
            status=report.status,
            attempt=attempt,
            payload=payload,
            http_status=http_status,
            error=error,
        )
        message.callbacks.append(result)
        if result.succeeded:
            return True
        log.info(
            "sandbox DLR %s for %s to %s failed (attempt %d): %s",
            report.status,
            message.id,
            url,
            attempt,
            error or f"HTTP {http_status}",
        )
        if attempt < attempts:
            await asyncio.sleep(retry_seconds * 2 ** (attempt - 1))
    return False
