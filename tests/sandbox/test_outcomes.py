"""The pure decisions: outcome by number, the report plan, chaos draws, segment counts."""

from __future__ import annotations

import random

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import pytest

from smsrelay.sandbox.outcomes import (
    OUTCOME_RULES,
    Outcome,
    ReportChaos,
    draw_report_chaos,
    draw_request_chaos,
    outcome_for,
    plan_reports,
)
from smsrelay.sandbox.settings import ChaosSettings


@pytest.mark.parametrize(
    ("number", "outcome"),
    [
        ("+15005550001", Outcome.UNDELIVERED),
        ("+15005550002", Outcome.NO_REPORT),
        ("+15005550003", Outcome.SENT_THEN_DELIVERED),
        ("+15005550009", Outcome.BLACKLISTED),
        ("+15005550400", Outcome.INVALID_DESTINATION),
        ("+15005550500", Outcome.SERVER_ERROR_TWICE),
        ("+15005550429", Outcome.RATE_LIMITED_ONCE),
        ("+15005550408", Outcome.SLOW_ANSWER),
        ("+15005550777", Outcome.REPORT_BEFORE_ANSWER),
        ("4915005550777", Outcome.REPORT_BEFORE_ANSWER),
        ("+15005550006", Outcome.DELIVERED),
        ("+15005551000", Outcome.DELIVERED),
    ],
)
def test_the_last_four_digits_choose_the_outcome(number: str, outcome: Outcome) -> None:
    assert outcome_for(number) is outcome


def test_every_outcome_has_a_documented_rule() -> None:
    assert {rule.outcome for rule in OUTCOME_RULES} == set(Outcome)


def test_a_delivered_message_gets_one_report_after_the_delay() -> None:
    plan = plan_reports(Outcome.DELIVERED, delay_seconds=0.5, late_seconds=5)
    assert [(r.after_seconds, r.status) for r in plan] == [(0.5, "delivered")]


def test_sent_then_delivered_spaces_the_reports_by_the_delay() -> None:
    plan = plan_reports(Outcome.SENT_THEN_DELIVERED, delay_seconds=0.5, late_seconds=5)
    assert [(r.after_seconds, r.status) for r in plan] == [(0.5, "sent"), (0.5, "delivered")]


def test_failures_carry_reason_and_error_code() -> None:
    (undelivered,) = plan_reports(Outcome.UNDELIVERED, delay_seconds=0, late_seconds=0)
    (blacklisted,) = plan_reports(Outcome.BLACKLISTED, delay_seconds=0, late_seconds=0)
    assert (undelivered.status, undelivered.reason, undelivered.error_code) == (
        "undelivered",
        "absent_subscriber",
        "30003",
    )
    assert (blacklisted.status, blacklisted.reason, blacklisted.error_code) == (
        "rejected",
        "blacklisted",
        "30004",
    )


def test_no_report_and_invalid_destination_plan_nothing_even_with_chaos() -> None:
    chaos = ReportChaos(late=True, duplicate=True, out_of_order=True)
    for outcome in (Outcome.NO_REPORT, Outcome.INVALID_DESTINATION):
        assert plan_reports(outcome, delay_seconds=1, late_seconds=1, chaos=chaos) == []


def test_report_before_answer_is_not_delayed() -> None:
    plan = plan_reports(Outcome.REPORT_BEFORE_ANSWER, delay_seconds=3, late_seconds=5)
    assert [(r.after_seconds, r.status) for r in plan] == [(0, "delivered")]


def test_late_chaos_adds_to_the_first_delay_only() -> None:
    plan = plan_reports(
        Outcome.SENT_THEN_DELIVERED, delay_seconds=1, late_seconds=5, chaos=ReportChaos(late=True)
    )
    assert [r.after_seconds for r in plan] == [6, 1]


def test_duplicate_chaos_repeats_the_final_report_at_once() -> None:
    plan = plan_reports(
        Outcome.SENT_THEN_DELIVERED,
        delay_seconds=1,
        late_seconds=0,
        chaos=ReportChaos(duplicate=True),
    )
    assert [(r.after_seconds, r.status) for r in plan] == [
        (1, "sent"),
        (1, "delivered"),
        (0, "delivered"),
    ]


def test_out_of_order_chaos_sends_sent_after_the_final_report() -> None:
    plan = plan_reports(
        Outcome.UNDELIVERED, delay_seconds=1, late_seconds=0, chaos=ReportChaos(out_of_order=True)
    )
    assert [(r.status, r.reason) for r in plan] == [
        ("undelivered", "absent_subscriber"),
        ("sent", None),
    ]


def test_the_same_seed_draws_the_same_chaos() -> None:
    chaos = ChaosSettings(error_rate=0.5, dlr_duplicate_rate=0.5, seed=7)
    first, second = random.Random(7), random.Random(7)
    draws_a = [
        (draw_request_chaos(first, chaos), draw_report_chaos(first, chaos)) for _ in range(50)
    ]
    draws_b = [
        (draw_request_chaos(second, chaos), draw_report_chaos(second, chaos)) for _ in range(50)
    ]
    assert draws_a == draws_b
    assert len({d[0].error for d in draws_a}) == 2  # both outcomes occur at 0.5


def test_rates_of_zero_and_one_are_never_and_always() -> None:
    rng = random.Random()
    never = ChaosSettings()
    always = ChaosSettings(**{f: 1.0 for f in ("error_rate", "reset_rate", "dlr_late_rate")})
    for _ in range(100):
        assert draw_request_chaos(rng, never) == draw_request_chaos(rng, ChaosSettings())
        request = draw_request_chaos(rng, always)
        assert request.error and request.reset and not request.slow
        assert draw_report_chaos(rng, always).late
