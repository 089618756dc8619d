"""Backoff: exponential with equal jitter, Retry-After as a floor, attempts bounded."""

from __future__ import annotations

import random

import pytest

from smsrelay.connectors.definition import Retry
from smsrelay.dispatch.backoff import (
    RETRY_AFTER_CAP_SECONDS,
    exponential_step,
    is_exhausted,
    next_attempt_delay,
)

RETRY = Retry(max_attempts=6, initial_seconds=1, max_seconds=300)


def test_step_doubles_from_initial_and_stops_at_max() -> None:
    steps = [exponential_step(n, RETRY) for n in range(1, 12)]
    assert steps[:6] == [1, 2, 4, 8, 16, 32]
    assert steps[-1] == 300
    assert exponential_step(10_000, RETRY) == 300


@pytest.mark.parametrize("attempt", [1, 2, 5, 9, 40])
def test_delay_is_between_half_and_all_of_the_step(attempt: int) -> None:
    rng = random.Random(attempt)
    step = exponential_step(attempt, RETRY)
    for _ in range(200):
        delay = next_attempt_delay(attempt, RETRY, None, rng)
        assert step / 2 <= delay <= step


def test_jitter_spreads_delays() -> None:
    rng = random.Random(7)
    delays = {round(next_attempt_delay(4, RETRY, None, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert next_attempt_delay(1, RETRY, 2.0, rng) >= 2.0
    # Longer than max_seconds still honoured: the provider asked for it.
    assert next_attempt_delay(1, RETRY, 900.0, rng) == 900.0


def test_retry_after_does_not_shorten_the_backoff() -> None:
    rng = random.Random(1)
    assert next_attempt_delay(8, RETRY, 1.0, rng) >= exponential_step(8, RETRY) / 2


def test_absurd_retry_after_is_capped_at_an_hour() -> None:
    assert next_attempt_delay(1, RETRY, 1e9, random.Random(0)) == RETRY_AFTER_CAP_SECONDS


def test_exhausted_after_max_attempts() -> None:
    assert not is_exhausted(5, RETRY)
    assert is_exhausted(6, RETRY)
    assert is_exhausted(1, Retry(max_attempts=1))
