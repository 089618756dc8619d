"""The sandbox provider: takes send requests, decides their fate, and reports delivery.

`Sandbox` is the whole state of one sandbox (settings, chaos, the message log, a seeded
random source, a clock and one HTTP client session for callbacks). The web layer
(`app.py`) reads requests into `SendItem`s, calls `submit`, and turns the `Submission`
into an HTTP answer. The host application calls `start()` and `close()`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from smsrelay.connectors.text_encoding import analyse_text
from smsrelay.sandbox.callbacks import deliver_report
from smsrelay.sandbox.intake import Api, SendItem
from smsrelay.sandbox.messages import MessageLog, PhoneSummary, RawRequest, SandboxMessage
from smsrelay.sandbox.outcomes import (
    RATE_LIMITS_PER_NUMBER,
    SERVER_ERRORS_PER_NUMBER,
    Outcome,
    PlannedReport,
    draw_report_chaos,
    draw_request_chaos,
    outcome_for,
    plan_reports,
)
from smsrelay.sandbox.settings import ChaosSettings, SandboxSettings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A whole send request answered with an HTTP error instead of being accepted."""

    http_status: int
    code: str
    error: str
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """What became of one send request: its messages, and how to answer it."""

    messages: list[SandboxMessage] = field(default_factory=list)
    refusal: Refusal | None = None
    reset: bool = False  # drop the connection without answering


class Sandbox:
    """One fake SMS provider: settings, in-memory state and the DLR callback client."""

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings or SandboxSettings()
        self.clock: Clock = clock or utc_now
        self.rng = random.Random(self.settings.chaos.seed)
        self.log = MessageLog(self.settings.max_messages)
        self._chaos = self.settings.chaos
        self._session = session
        self._owns_session = session is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests_per_number: OrderedDict[str, int] = OrderedDict()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the HTTP client for callbacks; call from the host application's lifespan."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True

    async def close(self) -> None:
        """Cancel pending delivery reports and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------ chaos

    @property
    def chaos(self) -> ChaosSettings:
        """The chaos in force now."""
        return self._chaos

    def set_chaos(self, chaos: ChaosSettings) -> None:
        """Replace the chaos settings; a seed restarts the random draws from it."""
        self._chaos = chaos
        if chaos.seed is not None:
            self.rng.seed(chaos.seed)

    # ------------------------------------------------------------ sending

    async def submit(
        self,
        api: Api,
        items: list[SendItem],
        raw: RawRequest,
        *,
        account_sid: str | None = None,
    ) -> Submission:
        """Take one send request (one message, or a batch) and decide how to answer it.

        Chaos comes first (reset, HTTP 500), then the number outcomes that refuse the whole
        request (0500, 0429; in a single send also 0400), then slow answers (0408, chaos).
        Accepted messages get their delivery reports scheduled; a 0777 number's reports are
        sent before this returns.
        """
        chaos = draw_request_chaos(self.rng, self._chaos)
        outcomes = [outcome_for(item.to) for item in items]

        def record_refused(
            status: str, http_status: int | None, reason: str
        ) -> list[SandboxMessage]:
            return [
                self._record(api, item, outcome, raw, status, http_status, reason, account_sid)
                for item, outcome in zip(items, outcomes, strict=True)
            ]

        if chaos.reset:
            return Submission(record_refused("error", None, "connection reset (chaos)"), reset=True)
        if chaos.error:
            error = Refusal(500, "server_error", "internal server error (sandbox chaos)")
            return Submission(record_refused("error", 500, error.error), error)
        refusal = self._transient_refusal(items, outcomes)
        if refusal is not None:
            return Submission(record_refused("error", refusal.http_status, refusal.error), refusal)
        if api is not Api.BATCH and outcomes[0] is Outcome.INVALID_DESTINATION:
            refusal = Refusal(400, "invalid_destination", "invalid destination")
            return Submission(record_refused("rejected", 400, refusal.error), refusal)

        http_status = 201 if api is Api.TWILIO else 200
        messages: list[SandboxMessage] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome is Outcome.INVALID_DESTINATION:
                status, reason = "rejected", "invalid destination"
            else:
                status, reason = "accepted", None
            messages.append(
                self._record(api, item, outcome, raw, status, http_status, reason, account_sid)
            )

        delay = 0.0
        if chaos.timeout or Outcome.SLOW_ANSWER in outcomes:
            delay = self.settings.timeout_seconds
        if chaos.slow:
            delay = max(delay, self.settings.slow_seconds)
        if delay > 0:
            # Only this request waits; the server keeps answering others meanwhile.
            await asyncio.sleep(delay)

        for message in messages:
            if message.status != "accepted":
                continue
            outcome = Outcome(message.outcome)
            plan = plan_reports(
                outcome,
                delay_seconds=self.settings.dlr_delay_seconds,
                late_seconds=self.settings.dlr_late_seconds,
                chaos=draw_report_chaos(self.rng, self._chaos),
            )
            if outcome is Outcome.REPORT_BEFORE_ANSWER:
                await self._send_reports(message, plan)
            elif plan:
                self._spawn(self._send_reports(message, plan))
        return Submission(messages)

    def _transient_refusal(self, items: list[SendItem], outcomes: list[Outcome]) -> Refusal | None:
        """0500 / 0429 numbers refuse their first requests; every such request is counted."""
        refusal: Refusal | None = None
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome is Outcome.SERVER_ERROR_TWICE:
                if self._count_request(item.to) <= SERVER_ERRORS_PER_NUMBER:
                    refusal = Refusal(500, "server_error", "internal server error (sandbox 0500)")
            elif outcome is Outcome.RATE_LIMITED_ONCE:
                seen = self._count_request(item.to)
                if seen <= RATE_LIMITS_PER_NUMBER and refusal is None:
                    refusal = Refusal(
                        429,
                        "rate_limited",
                        "too many requests (sandbox 0429)",
                        retry_after=self.settings.retry_after_seconds,
                    )
        return refusal

    def _count_request(self, number: str) -> int:
        seen = self._requests_per_number.pop(number, 0) + 1
        self._requests_per_number[number] = seen
        # Bounded like the log, forgetting the least recently used numbers.
        while len(self._requests_per_number) > self.settings.max_messages:
            self._requests_per_number.popitem(last=False)
        return seen

    def _record(
        self,
        api: Api,
        item: SendItem,
        outcome: Outcome,
        raw: RawRequest,
        status: str,
        http_status: int | None,
        reason: str | None,
        account_sid: str | None,
    ) -> SandboxMessage:
        now = self.clock()
        text = analyse_text(item.body)
        segments, encoding = text.segments, text.encoding
        prefix = (
            "SM" + secrets.token_hex(16) if api is Api.TWILIO else "sbx-" + secrets.token_hex(8)
        )
        message = SandboxMessage(
            id=prefix,
            api=api,
            to=item.to,
            body=item.body,
            sender=item.sender,
            client_ref=item.client_ref,
            callback_url=item.callback_url or self.settings.default_callback_url,
            segments=segments,
            encoding=encoding,
            outcome=str(outcome),
            received_at=now,
            request=raw,
            status=status,
            http_status=http_status,
            reason=reason,
            account_sid=account_sid,
        )
        message.history.append((status, now))
        self.log.add(message)
        self._notify()
        return message

    # ------------------------------------------------------------ delivery reports

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._notify()

    async def _send_reports(self, message: SandboxMessage, plan: list[PlannedReport]) -> None:
        """Send a message's reports in order, each after its delay."""
        previous_at: datetime | None = None
        for report in plan:
            if report.after_seconds > 0:
                await asyncio.sleep(report.after_seconds)
            at = previous_at if report.repeat and previous_at else self.clock()
            previous_at = at
            if message.callback_url is None:
                # Nowhere to call: the status still moves, as a real provider's would.
                message.set_status(report.status, at, report.reason, report.error_code)
            else:
                await self.start()
                assert self._session is not None
                await deliver_report(
                    self._session,
                    message,
                    report,
                    url=message.callback_url,
                    at=at,
                    clock=self.clock,
                    attempts=self.settings.callback_attempts,
                    retry_seconds=self.settings.callback_retry_seconds,
                    timeout_seconds=self.settings.callback_timeout_seconds,
                )
            self._notify()

    # ------------------------------------------------------------ state

    def messages(self, *, to: str | None = None, limit: int = 100) -> list[SandboxMessage]:
        """Kept messages, newest first, optionally only those to one number."""
        return self.log.newest(to=to, limit=limit)

    def message(self, message_id: str) -> SandboxMessage | None:
        """One kept message by id."""
        return self.log.get(message_id)

    def phones(self) -> list[PhoneSummary]:
        """Every number with kept messages and its count, most recent first."""
        return self.log.phones()

    def clear(self) -> int:
        """Forget all messages and the per-number request counts (0500, 0429 start over)."""
        self._requests_per_number.clear()
        count = self.log.clear()
        self._notify()
        return count

    # ------------------------------------------------------------ waiting (for tests)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[Sandbox], bool], *, timeout: float = 10.0
    ) -> None:
        """Wait until `predicate(sandbox)` holds, re-checking whenever the state changes.

        Raises TimeoutError after `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_idle(self, *, timeout: float = 30.0) -> None:
        """Wait until every scheduled delivery report has been sent (or given up)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
