"""Connector leases as one worker keeps them: renewal beside the requests, hand-over, loss."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import pytest

from smsrelay.connectors.definition import RateLimit
from smsrelay.dispatch import lease_keeper
from smsrelay.dispatch.lease_keeper import ConnectorLeaseKeeper
from smsrelay.dispatch.rate_limit import ConnectorLimiter
from smsrelay.store.connector_leases import LeaseGrant, lease_holders
from smsrelay.store.database import Database

from .harness import Harness
from .test_worker_pipeline import provider_yaml

SECONDS = 10.0  # renew after 5 s, send nothing after 8 s (a fifth kept as margin)


class GatedLeases:
    """`acquire_connector_lease` that waits at a gate the test opens (or fails)."""

    def __init__(self) -> None:
        self.real = lease_keeper.acquire_connector_lease
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.failure: Exception | None = None

    async def __call__(
        self, db: Database, connector_id: int, owner: str, *, now: datetime, seconds: float
    ) -> LeaseGrant | None:
        self.calls += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await self.real(db, connector_id, owner, now=now, seconds=seconds)


@pytest.fixture
def leases(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedLeases]:
    gated = GatedLeases()
    monkeypatch.setattr(lease_keeper, "acquire_connector_lease", gated)
    yield gated


def keeper(harness: Harness, owner: str) -> ConnectorLeaseKeeper:
    return ConnectorLeaseKeeper(
        harness.database,
        owner,
        seconds=SECONDS,
        clock=harness.clock,
        monotonic=harness.monotonic,
    )


def limiter() -> ConnectorLimiter:
    return ConnectorLimiter(RateLimit(per_second=10, burst=5))


async def limited_connector(harness: Harness) -> int:
    stored = await harness.connector(provider_yaml(rate_limit="{per_second: 10, burst: 5}"))
    return stored.id


async def one_holder(harness: Harness) -> tuple[int, ConnectorLeaseKeeper, ConnectorLimiter]:
    """A limited connector whose lease worker w1 has just taken."""
    connector_id = await limited_connector(harness)
    worker, bucket = keeper(harness, "w1"), limiter()
    assert await worker.hold(connector_id, bucket)
    return connector_id, worker, bucket


def advance(harness: Harness, seconds: float) -> None:
    harness.monotonic.now += seconds
    harness.clock.advance(seconds)


async def test_a_request_past_half_the_lease_goes_out_while_it_is_renewed(
    harness: Harness, leases: GatedLeases
) -> None:
    connector_id, worker, bucket = await one_holder(harness)
    first_expiry = (await lease_holders(harness.database))[connector_id][1]

    advance(harness, 6)  # past renew_at, before the local deadline
    leases.gate.clear()
    async with asyncio.timeout(5):  # a hold waiting on the closed gate would hang here
        assert await worker.hold(connector_id, bucket)
        assert await worker.hold(connector_id, bucket)
    await asyncio.sleep(0)
    assert leases.calls == 2  # the first take, then one renewal for both requests

    leases.gate.set()
    await worker._renewals[connector_id]
    owner, expiry = (await lease_holders(harness.database))[connector_id]
    assert owner == "w1" and first_expiry is not None and expiry is not None
    assert (expiry - first_expiry).total_seconds() == pytest.approx(6)
    advance(harness, 6)  # 12 s after the first take: held through the renewal at 6 s
    assert worker.holds(connector_id)


async def test_a_request_past_the_local_deadline_waits_for_the_renewal(
    harness: Harness, leases: GatedLeases
) -> None:
    connector_id, worker, bucket = await one_holder(harness)

    advance(harness, 8.5)  # past valid_until (10 - 2 s margin)
    leases.gate.clear()
    waiting = asyncio.create_task(worker.hold(connector_id, bucket))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    leases.gate.set()
    assert await waiting


async def test_a_failed_renewal_keeps_the_lease_until_its_local_deadline(
    harness: Harness, leases: GatedLeases, caplog: pytest.LogCaptureFixture
) -> None:
    connector_id, worker, bucket = await one_holder(harness)

    advance(harness, 6)
    leases.failure = ConnectionError("database unreachable")
    assert await worker.hold(connector_id, bucket)
    await asyncio.gather(worker._renewals[connector_id])
    assert "renewing the lease on connector" in caplog.text
    assert worker.holds(connector_id)  # until 8 s

    advance(harness, 2.5)  # past the deadline: the request waits for the database
    with pytest.raises(ConnectionError):
        await worker.hold(connector_id, bucket)
    assert not worker.holds(connector_id)


async def test_release_waits_for_a_running_renewal_so_the_lease_stays_released(
    harness: Harness, leases: GatedLeases
) -> None:
    connector_id = await limited_connector(harness)
    first, second = keeper(harness, "w1"), keeper(harness, "w2")
    bucket = limiter()
    assert await first.hold(connector_id, bucket)

    advance(harness, 6)
    leases.gate.clear()
    async with asyncio.timeout(5):  # a hold waiting on the closed gate would hang here
        assert await first.hold(connector_id, bucket)  # the renewal waits at the gate
    releasing = asyncio.create_task(first.release(connector_id, bucket))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not releasing.done()
    leases.gate.set()
    await releasing

    assert (await lease_holders(harness.database))[connector_id] == (None, None)
    assert not first.holds(connector_id)
    assert await second.hold(connector_id, limiter())


async def test_a_worker_stalled_past_its_lease_loses_it_to_another(
    harness: Harness, leases: GatedLeases
) -> None:
    connector_id = await limited_connector(harness)
    first, second = keeper(harness, "w1"), keeper(harness, "w2")
    assert await first.hold(connector_id, limiter())
    assert not await second.hold(connector_id, limiter())

    advance(harness, 11)  # the first worker stalled past its lease: the second takes it
    assert await second.hold(connector_id, limiter())
    assert not await first.hold(connector_id, limiter())
    assert not first.holds(connector_id)
