"""What the sandbox does with a message: chosen by the recipient number's last four digits.

Pure decisions over plain data: which outcome a number gets, which delivery reports follow
and when, and which chaos draws apply. The provider (`provider.py`) carries them out.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace

from smsrelay.sandbox.settings import ChaosSettings


class Outcome(enum.StrEnum):
    """What happens to a message sent to a given number."""

    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    NO_REPORT = "no_report"
    SENT_THEN_DELIVERED = "sent_then_delivered"
    INVALID_DESTINATION = "invalid_destination"
    SERVER_ERROR_TWICE = "server_error_twice"
    RATE_LIMITED_ONCE = "rate_limited_once"
    SLOW_ANSWER = "slow_answer"
    REPORT_BEFORE_ANSWER = "report_before_answer"
    BLACKLISTED = "blacklisted"


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """One row of the documented outcome table."""

    ending: str | None  # None: every other number
    outcome: Outcome
    send_answer: str
    delivery_reports: str


OUTCOME_RULES: tuple[OutcomeRule, ...] = (
    OutcomeRule("0001", Outcome.UNDELIVERED, "accepted", "undelivered, reason absent_subscriber"),
    OutcomeRule("0002", Outcome.NO_REPORT, "accepted", "none, ever (the message ends unconfirmed)"),
    OutcomeRule(
        "0003",
        Outcome.SENT_THEN_DELIVERED,
        "accepted",
        "sent, then delivered one more DLR delay later",
    ),
    OutcomeRule("0009", Outcome.BLACKLISTED, "accepted", "rejected, reason blacklisted"),
    OutcomeRule(
        "0400",
        Outcome.INVALID_DESTINATION,
        "HTTP 400 invalid destination (permanent); in a batch, that element is rejected",
        "none",
    ),
    OutcomeRule(
        "0500",
        Outcome.SERVER_ERROR_TWICE,
        "HTTP 500 for the first two requests to the number, then accepted",
        "delivered",
    ),
    OutcomeRule(
        "0429",
        Outcome.RATE_LIMITED_ONCE,
        "HTTP 429 with Retry-After: 2 for the first request to the number, then accepted",
        "delivered",
    ),
    OutcomeRule(
        "0408",
        Outcome.SLOW_ANSWER,
        "accepted, after timeout_seconds (default 20 s); other requests are not held up",
        "delivered",
    ),
    OutcomeRule(
        "0777",
        Outcome.REPORT_BEFORE_ANSWER,
        "accepted, but only after the DLR callback was answered",
        "delivered, before the send answer",
    ),
    OutcomeRule(None, Outcome.DELIVERED, "accepted", "delivered"),
)

_BY_ENDING = {rule.ending: rule.outcome for rule in OUTCOME_RULES if rule.ending}

# Failures the number-based outcomes answer before accepting, in requests per number.
SERVER_ERRORS_PER_NUMBER = 2
RATE_LIMITS_PER_NUMBER = 1


def outcome_for(number: str) -> Outcome:
    """The outcome of a recipient number, by its last four digits."""
    return _BY_ENDING.get(number[-4:], Outcome.DELIVERED)


FINAL_STATUSES = frozenset({"delivered", "undelivered", "rejected"})

# Standard Twilio delivery error codes, reused in every format so they look familiar.
ERROR_CODES = {"absent_subscriber": "30003", "blacklisted": "30004"}


@dataclass(frozen=True, slots=True)
class PlannedReport:
    """One delivery report to send, `after_seconds` after the previous one (or the answer)."""

    after_seconds: float
    status: str
    reason: str | None = None
    repeat: bool = False  # a duplicate: the previous report again, timestamp and all

    @property
    def error_code(self) -> str | None:
        """The error code that goes with the reason, if any."""
        return ERROR_CODES.get(self.reason) if self.reason else None

    @property
    def is_final(self) -> bool:
        """Whether this report ends the message's life (anything but `sent`)."""
        return self.status in FINAL_STATUSES


_REPORTS: dict[Outcome, tuple[PlannedReport, ...]] = {
    Outcome.DELIVERED: (PlannedReport(0, "delivered"),),
    Outcome.UNDELIVERED: (PlannedReport(0, "undelivered", "absent_subscriber"),),
    Outcome.NO_REPORT: (),
    Outcome.SENT_THEN_DELIVERED: (PlannedReport(0, "sent"), PlannedReport(0, "delivered")),
    Outcome.INVALID_DESTINATION: (),
    Outcome.SERVER_ERROR_TWICE: (PlannedReport(0, "delivered"),),
    Outcome.RATE_LIMITED_ONCE: (PlannedReport(0, "delivered"),),
    Outcome.SLOW_ANSWER: (PlannedReport(0, "delivered"),),
    Outcome.REPORT_BEFORE_ANSWER: (PlannedReport(0, "delivered"),),
    Outcome.BLACKLISTED: (PlannedReport(0, "rejected", "blacklisted"),),
}


@dataclass(frozen=True, slots=True)
class RequestChaos:
    """The chaos drawn for one send request."""

    reset: bool = False
    error: bool = False
    timeout: bool = False
    slow: bool = False


@dataclass(frozen=True, slots=True)
class ReportChaos:
    """The chaos drawn for one accepted message's delivery reports."""

    late: bool = False
    duplicate: bool = False
    out_of_order: bool = False


def draw_request_chaos(rng: random.Random, chaos: ChaosSettings) -> RequestChaos:
    """Draw the chaos of one send request; always four draws, so a seed replays exactly."""
    return RequestChaos(
        reset=rng.random() < chaos.reset_rate,
        error=rng.random() < chaos.error_rate,
        timeout=rng.random() < chaos.timeout_rate,
        slow=rng.random() < chaos.slow_rate,
    )


def draw_report_chaos(rng: random.Random, chaos: ChaosSettings) -> ReportChaos:
    """Draw the chaos of one message's delivery reports (three draws)."""
    return ReportChaos(
        late=rng.random() < chaos.dlr_late_rate,
        duplicate=rng.random() < chaos.dlr_duplicate_rate,
        out_of_order=rng.random() < chaos.dlr_out_of_order_rate,
    )


def plan_reports(
    outcome: Outcome,
    *,
    delay_seconds: float,
    late_seconds: float,
    chaos: ReportChaos = ReportChaos(),
) -> list[PlannedReport]:
    """The delivery reports of an accepted message, in sending order, with their delays."""
    reports = list(_REPORTS[outcome])
    if not reports:
        return []
    first_delay = 0.0 if outcome is Outcome.REPORT_BEFORE_ANSWER else delay_seconds
    if chaos.late:
        first_delay += late_seconds
    reports = [replace(r, after_seconds=delay_seconds) for r in reports]
    final = next((r for r in reversed(reports) if r.is_final), None)
    if final is not None and chaos.out_of_order:
        # The intermediate `sent` arrives after the final report, as reordering networks do.
        reports = [final, replace(final, status="sent", reason=None)]
    if final is not None and chaos.duplicate:
        at = reports.index(final)
        reports.insert(at + 1, replace(final, after_seconds=0.0, repeat=True))
    reports[0] = replace(reports[0], after_seconds=first_delay)
    return reports
