"""The message lifecycle (SPEC §3) as data: statuses and the transitions allowed between them.

Pure: the store consults it before every status write, so a late or duplicate report, or a
send response that arrives after the delivery report, never moves a message backwards.
"""

from __future__ import annotations

import enum

from smsrelay.connectors.exchange import DeliveryOutcome


class MessageStatus(enum.StrEnum):
    """Where a message is in its life."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"
    DISPATCH_ERROR = "dispatch_error"
    CANCELED = "canceled"


S = MessageStatus

# Statuses in which a message is finished: nothing more will be sent. `unconfirmed` is
# final too, but a late final report may still settle it (see TRANSITIONS).
FINAL: frozenset[MessageStatus] = frozenset(
    {S.DELIVERED, S.UNDELIVERED, S.UNCONFIRMED, S.FAILED, S.CANCELED}
)

# Statuses a dispatcher may claim (a `sending` one only once its lease has expired).
CLAIMABLE: frozenset[MessageStatus] = frozenset({S.QUEUED, S.DISPATCH_ERROR, S.SENDING})

# Statuses that mean "not yet handed to the provider": the message can still be canceled.
CANCELABLE: frozenset[MessageStatus] = frozenset({S.QUEUED, S.DISPATCH_ERROR})

TRANSITIONS: dict[MessageStatus, frozenset[MessageStatus]] = {
    S.QUEUED: frozenset({S.SENDING, S.CANCELED, S.QUEUED, S.DISPATCH_ERROR}),
    S.DISPATCH_ERROR: frozenset({S.SENDING, S.CANCELED, S.QUEUED, S.DISPATCH_ERROR}),
    # A fast provider's delivery report can beat the send response: sending -> delivered.
    S.SENDING: frozenset(
        {S.QUEUED, S.FAILED, S.SENT, S.DISPATCH_ERROR, S.DELIVERED, S.UNDELIVERED}
    ),
    S.SENT: frozenset({S.DELIVERED, S.UNDELIVERED, S.UNCONFIRMED}),
    S.UNCONFIRMED: frozenset({S.DELIVERED, S.UNDELIVERED}),
    S.DELIVERED: frozenset(),
    S.UNDELIVERED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}


# Every allowed (old, new) pair: statuses are strings, so their texts find them too.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (old, new) for old, targets in TRANSITIONS.items() for new in targets
)


def can_transition(old: MessageStatus | str, new: MessageStatus | str) -> bool:
    """Whether a message in status `old` may be moved to `new`."""
    if (old, new) in _ALLOWED:
        return True
    # Not allowed, or not a status at all (which raises ValueError).
    return MessageStatus(new) in TRANSITIONS[MessageStatus(old)]


def status_after_report(
    current: MessageStatus | str, outcome: DeliveryOutcome
) -> MessageStatus | None:
    """The status a delivery report moves a message to, or None to leave it as it is.

    A pending report for a message still `sending` proves the provider accepted it, so the
    message becomes `sent` even if the send response is not recorded yet.
    """
    current = MessageStatus(current)
    if outcome is DeliveryOutcome.DELIVERED:
        target = S.DELIVERED
    elif outcome is DeliveryOutcome.FAILED:
        target = S.UNDELIVERED
    else:
        target = S.SENT
    return target if can_transition(current, target) else None
