"""When to try a message again after a transient failure (pure).

Exponential backoff with *equal jitter*: the n-th retry waits a random time between half
and all of `initial_seconds * 2**(n-1)` (capped at `max_seconds`). Equal rather than full
jitter because full jitter may retry almost at once, which is exactly what a provider that
just answered 429 or 5xx does not want; half the step is always kept, the other half
spreads a burst of failures so they do not come back together.

A provider's `Retry-After` is a floor: we never come back earlier than it asks, even when
that is longer than `max_seconds`, but no later than `RETRY_AFTER_CAP_SECONDS` so a broken
header (`Retry-After: 99999999`) cannot park a message for years.
"""

from __future__ import annotations

import random

from smsrelay.connectors.definition import Retry

RETRY_AFTER_CAP_SECONDS = 3600.0


def exponential_step(attempt: int, retry: Retry) -> float:
    """The un-jittered delay after `attempt` attempts (1 = after the first failure)."""
    exponent = max(0, attempt - 1)
    # 2**exponent overflows float for silly attempt counts; the cap is reached long before.
    if exponent >= 64:
        return retry.max_seconds
    return float(min(retry.max_seconds, retry.initial_seconds * (2**exponent)))


def next_attempt_delay(
    attempt: int, retry: Retry, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before the next attempt, after `attempt` attempts have been made.

    Equal jitter over the exponential step; `retry_after` (seconds, from the provider) is
    honoured as a floor, itself capped at one hour.
    """
    step = exponential_step(attempt, retry)
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


def is_exhausted(attempts: int, retry: Retry) -> bool:
    """True when `attempts` attempts leave no retry under `retry.max_attempts`."""
    return attempts >= retry.max_attempts
