"""Per-connector send pacing: a token bucket for the rate and a semaphore for concurrency.

The bucket holds up to `burst` tokens and refills at `per_second`; a request takes one
token per message or per segment (`rate_limit.unit`). A request larger than the bucket (a
batch of 1000 against a burst of 50) waits for a full bucket and then leaves the bucket in
debt, so the long-run rate stays exact whatever the request sizes. Waiters are served in
arrival order. Clock and sleep are injected, so tests run on a fake clock.

Tokens are spent before a request is handed to the transport, and its bytes leave a loop
turn or more later. A second bucket of the same rate and burst paces those writes
(`pace_write`), so that requests whose writes were held up (a process waiting for a core)
do not reach the provider together, above the rate, with the ones spent after them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from smsrelay.connectors.definition import RateLimit

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float arithmetic on refills leaves crumbs like 0.9999999998 tokens; treat them as whole.
_EPSILON = 1e-9


class TokenBucket:
    """A token bucket; `per_second=None` means unlimited (acquire never waits)."""

    def __init__(
        self,
        per_second: float | None,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive or None")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        # One waiter at a time holds the lock while it sleeps: FIFO order, no thundering herd.
        self._lock = asyncio.Lock()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while a large request's debt is being repaid)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if self.per_second is not None:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_second)

    def start_at(self, tokens: float, seconds_ago: float = 0.0) -> None:
        """Set the level to what `tokens` (negative: a debt) became after `seconds_ago`.

        A worker taking over a connector's lease continues the bucket its last holder
        left (see `store.connector_leases`).
        """
        refill = max(0.0, seconds_ago) * (self.per_second or 0.0)
        self._tokens = min(float(self.burst), tokens + refill)
        self._updated = self._clock()

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` tokens may be spent, then spend them."""
        if self.per_second is None or n <= 0:
            return
        needed = min(float(n), float(self.burst))
        async with self._lock:
            while True:
                self._refill()
                if self._tokens + _EPSILON >= needed:
                    self._tokens -= n
                    return
                await self._sleep((needed - self._tokens) / self.per_second)


class ConnectorLimiter:
    """A connector's rate limit and concurrency limit together."""

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate_limit = rate_limit
        self.bucket = TokenBucket(
            rate_limit.per_second, rate_limit.effective_burst, clock=clock, sleep=sleep
        )
        # The same rate where requests leave the process (`pace_write`).
        self.writes = TokenBucket(
            rate_limit.per_second, rate_limit.effective_burst, clock=clock, sleep=sleep
        )
        self._slots = asyncio.Semaphore(rate_limit.concurrency)
        self.in_flight = 0
        # Whether a request costs a token per segment rather than per message (see `units`).
        self.per_segment = rate_limit.unit == "segments"

    def units(self, segments: Sequence[int]) -> int:
        """How many tokens a request costs under `rate_limit.unit`, given each of its
        messages' segment count (a message counts at least one)."""
        if self.per_segment:
            return sum(max(1, count) for count in segments)
        return len(segments)

    async def acquire(self, n: int = 1) -> None:
        """Spend `n` tokens (messages or segments), waiting for the bucket if needed."""
        await self.bucket.acquire(n)

    async def pace_write(self, n: int) -> None:
        """Wait, just before a request's first bytes are written, until `n` writes are due.

        The writes follow the tokens, so this seldom waits: only when writes come closer
        together than the rate, because earlier ones were held up between their token and
        the socket.
        """
        await self.writes.acquire(n)

    @property
    def tokens(self) -> float:
        """What the next request may spend: the lower of the two buckets' levels."""
        return min(self.bucket.tokens, self.writes.tokens)

    def start_at(self, tokens: float, seconds_ago: float = 0.0) -> None:
        """Continue from another worker's buckets (`TokenBucket.start_at`, both buckets)."""
        self.bucket.start_at(tokens, seconds_ago)
        self.writes.start_at(tokens, seconds_ago)

    @property
    def limited(self) -> bool:
        """True when the connector has a rate limit (not only a concurrency limit)."""
        return self.bucket.per_second is not None

    def permit(self, n: int) -> _Permit:
        """Hold a concurrency slot and `n` tokens for the duration of one request.

        The slot is taken first: tokens granted while waiting for a slot would otherwise
        pile up and let requests start together above the rate.
        """
        return _Permit(self, n)


class _Permit:
    """`async with limiter.permit(n)`: a plain class, as it runs once per request."""

    __slots__ = ("_limiter", "_n")

    def __init__(self, limiter: ConnectorLimiter, n: int) -> None:
        self._limiter = limiter
        self._n = n

    async def __aenter__(self) -> None:
        limiter = self._limiter
        await limiter._slots.acquire()
        try:
            if limiter.bucket.per_second is not None:
                await limiter.bucket.acquire(self._n)
        except BaseException:
            limiter._slots.release()
            raise
        limiter.in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.in_flight -= 1
        self._limiter._slots.release()
