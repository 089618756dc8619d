"""The message lifecycle of SPEC §3: which status changes are allowed, and what reports do."""

from __future__ import annotations

import itertools

import pytest

from smsrelay.connectors.exchange import DeliveryOutcome
from smsrelay.store.lifecycle import FINAL, MessageStatus, can_transition, status_after_report

S = MessageStatus

ALLOWED = {
    (S.QUEUED, S.SENDING),
    (S.QUEUED, S.CANCELED),
    (S.QUEUED, S.QUEUED),
    (S.QUEUED, S.DISPATCH_ERROR),
    (S.DISPATCH_ERROR, S.SENDING),
    (S.DISPATCH_ERROR, S.CANCELED),
    (S.DISPATCH_ERROR, S.QUEUED),
    (S.DISPATCH_ERROR, S.DISPATCH_ERROR),
    (S.SENDING, S.QUEUED),
    (S.SENDING, S.FAILED),
    (S.SENDING, S.SENT),
    (S.SENDING, S.DISPATCH_ERROR),
    (S.SENDING, S.DELIVERED),
    (S.SENDING, S.UNDELIVERED),
    (S.SENT, S.DELIVERED),
    (S.SENT, S.UNDELIVERED),
    (S.SENT, S.UNCONFIRMED),
    (S.UNCONFIRMED, S.DELIVERED),
    (S.UNCONFIRMED, S.UNDELIVERED),
}


@pytest.mark.parametrize(
    ("old", "new"), list(itertools.product(MessageStatus, MessageStatus)), ids=str
)
def test_transition_table(old: MessageStatus, new: MessageStatus) -> None:
    assert can_transition(old, new) == ((old, new) in ALLOWED)


def test_final_statuses_only_change_by_a_late_report_after_unconfirmed() -> None:
    assert {S.DELIVERED, S.UNDELIVERED, S.FAILED, S.CANCELED, S.UNCONFIRMED} == FINAL
    for final in FINAL - {S.UNCONFIRMED}:
        assert not any(can_transition(final, new) for new in MessageStatus)


def test_transitions_accept_plain_strings() -> None:
    assert can_transition("sent", "delivered")
    assert not can_transition("delivered", "sent")


@pytest.mark.parametrize(("old", "new"), [("sent", "bogus"), ("bogus", "sent")])
def test_a_transition_from_or_to_no_status_is_an_error(old: str, new: str) -> None:
    with pytest.raises(ValueError, match="bogus"):
        can_transition(old, new)


def test_delivered_report_settles_a_sent_message() -> None:
    assert status_after_report(S.SENT, DeliveryOutcome.DELIVERED) is S.DELIVERED
    assert status_after_report(S.SENT, DeliveryOutcome.FAILED) is S.UNDELIVERED


def test_report_before_send_response_settles_a_sending_message() -> None:
    assert status_after_report(S.SENDING, DeliveryOutcome.DELIVERED) is S.DELIVERED
    assert status_after_report(S.SENDING, DeliveryOutcome.PENDING) is S.SENT


def test_late_final_report_settles_an_unconfirmed_message() -> None:
    assert status_after_report(S.UNCONFIRMED, DeliveryOutcome.DELIVERED) is S.DELIVERED
    assert status_after_report(S.UNCONFIRMED, DeliveryOutcome.PENDING) is None


@pytest.mark.parametrize("outcome", list(DeliveryOutcome))
def test_reports_never_move_a_final_message(outcome: DeliveryOutcome) -> None:
    for status in (S.DELIVERED, S.UNDELIVERED, S.FAILED, S.CANCELED):
        assert status_after_report(status, outcome) is None


def test_duplicate_pending_report_changes_nothing() -> None:
    assert status_after_report(S.SENT, DeliveryOutcome.PENDING) is None
