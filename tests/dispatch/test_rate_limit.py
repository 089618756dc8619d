"""Rate limiting per connector, on a fake clock: exact rate, burst, unit, concurrency."""

from __future__ import annotations

import asyncio
import itertools

from smsrelay.connectors.definition import RateLimit
from smsrelay.dispatch.rate_limit import ConnectorLimiter, TokenBucket


class FakeClock:
    """A clock that only moves when somebody sleeps; sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter_on_fake_clock(
    *, per_second: float, burst: int, concurrency: int = 10
) -> tuple[FakeClock, ConnectorLimiter]:
    clock = FakeClock()
    rate = RateLimit(per_second=per_second, burst=burst, concurrency=concurrency)
    return clock, ConnectorLimiter(rate, clock=clock, sleep=clock.sleep)


async def test_burst_goes_out_at_once_then_the_rate_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    start = clock.now
    times = []
    for _ in range(25):
        await bucket.acquire(1)
        times.append(clock.now - start)
    assert times[:5] == [0, 0, 0, 0, 0]
    # 20 more at 10/s take exactly 2 s.
    assert abs(times[-1] - 2.0) < 1e-6
    gaps = [b - a for a, b in itertools.pairwise(times[5:])]
    assert all(abs(g - 0.1) < 1e-6 for g in gaps)


async def test_long_run_rate_is_exact_with_mixed_sizes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(50, 50, clock=clock, sleep=clock.sleep)
    start = clock.now
    spent = 0
    previous = 0.0
    for size in [1, 7, 30, 2, 120, 1, 1, 300, 9] * 5:
        await bucket.acquire(size)
        granted_at = clock.now - start
        # Granted exactly when burst + rate * t covers what was spent before plus this
        # request (a request above the burst needs a full bucket): never earlier, no later.
        expected = max(previous, (spent + min(size, 50) - 50) / 50)
        assert abs(granted_at - expected) < 1e-6
        spent += size
        previous = granted_at


async def test_request_larger_than_burst_waits_for_full_bucket_then_owes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock=clock, sleep=clock.sleep)
    await bucket.acquire(100)  # a full bucket is enough to start
    assert clock.sleeps == []
    await bucket.acquire(1)  # the debt of 90 must be repaid first: 9.1 s
    assert abs(clock.now - 1000.0 - 9.1) < 1e-6


async def test_unlimited_never_waits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, 1, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await bucket.acquire(1000)
    assert clock.sleeps == []


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire(1)
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(6)))
    assert order == list(range(6))
    assert abs(clock.now - 1000.0 - 5.0) < 1e-6


def test_segments_unit_counts_segments() -> None:
    # Three messages of 1, 4 and 2 segments; a message with no count still costs one.
    assert ConnectorLimiter(RateLimit(unit="segments")).units([1, 4, 2]) == 7
    assert ConnectorLimiter(RateLimit(unit="segments")).units([0, 4]) == 5
    assert ConnectorLimiter(RateLimit(unit="messages")).units([1, 4, 2]) == 3


async def test_concurrency_limit_holds_requests_in_flight() -> None:
    limiter = ConnectorLimiter(RateLimit(concurrency=3))
    peak = 0
    release = asyncio.Event()

    async def request() -> None:
        nonlocal peak
        async with limiter.permit(1):
            peak = max(peak, limiter.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert limiter.in_flight == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3
    assert limiter.in_flight == 0


async def test_permit_charges_the_rate_per_request() -> None:
    clock, limiter = limiter_on_fake_clock(per_second=2, burst=2)
    for _ in range(6):
        async with limiter.permit(1):
            pass
    assert abs(clock.now - 1000.0 - 2.0) < 1e-6


async def test_writes_that_follow_their_tokens_are_not_held() -> None:
    clock, limiter = limiter_on_fake_clock(per_second=2, burst=1, concurrency=1)
    for _ in range(5):
        async with limiter.permit(1):
            await limiter.pace_write(1)
    # Only the tokens waited: one at once, four more at 2/s.
    assert clock.sleeps == [0.5] * 4


async def test_writes_held_up_after_their_tokens_go_out_at_the_rate() -> None:
    clock, limiter = limiter_on_fake_clock(per_second=2, burst=1)
    spent = []
    for _ in range(3):
        await limiter.acquire(1)
        spent.append(clock.now - 1000.0)
    assert spent == [0.0, 0.5, 1.0]
    # The three requests' writes were held up until the last token: they do not go out
    # together but at the rate, the first at once.
    written = []
    for _ in range(3):
        await limiter.pace_write(1)
        written.append(clock.now - 1000.0)
    assert written == [1.0, 1.5, 2.0]


async def test_a_new_holder_continues_both_buckets() -> None:
    clock, limiter = limiter_on_fake_clock(per_second=10, burst=5)
    limiter.start_at(-2.0, 0.1)  # a debt of 2 tokens, 0.1 s ago: -1 now
    assert abs(limiter.tokens + 1.0) < 1e-9
    await limiter.pace_write(1)
    # The write waited for the debt too: 2 tokens at 10/s.
    assert abs(clock.now - 1000.2) < 1e-9


async def test_the_level_handed_on_is_the_lower_bucket() -> None:
    _clock, limiter = limiter_on_fake_clock(per_second=10, burst=5)
    await limiter.acquire(2)
    assert limiter.tokens == 3.0
    await limiter.pace_write(4)
    assert limiter.tokens == 1.0
