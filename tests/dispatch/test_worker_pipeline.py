"""Dispatcher behaviour over an in-memory transport: failures, pacing, send-once, stopping."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import insert

from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.transport import (
    AiohttpTransport,
    BeforeWrite,
    InMemoryTransport,
    TransportError,
)
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import (
    NewMessage,
    claim_due_messages,
    insert_messages,
    new_message_id,
)
from smsrelay.store.tables import provider_ids

from .harness import Harness, attempt_details

PROVIDER = """
name: acme
request:
  url: https://sms.example.com/send
  headers: {{Authorization: "Bearer {{{{secret.api_key}}}}"}}
  body:
    json: {{to: "{{{{to}}}}", text: "{text}", ref: "{{{{message_id}}}}"}}
response:
  message_id: $.id
  error: $.error
rate_limit: {rate_limit}
retry: {{max_attempts: 2, initial_seconds: 1, max_seconds: 10}}
secrets: {{api_key: key-123}}
"""


def provider_yaml(
    text: str = "{{body}}", rate_limit: str = "{concurrency: 8}", url: str | None = None
) -> str:
    document = PROVIDER.format(text=text, rate_limit=rate_limit)
    return document.replace("https://sms.example.com/send", url) if url else document


def accept(request: HttpRequest) -> HttpResponse:
    ref = json.loads(request.body)["ref"]
    return HttpResponse(
        200, {"Content-Type": "application/json"}, json.dumps({"id": f"p-{ref}"}).encode()
    )


async def test_missing_parameter_fails_the_message_and_sends_nothing(harness: Harness) -> None:
    connector = await harness.connector(provider_yaml(text="Hi {{params.first_name}}: {{body}}"))
    [message_id] = await harness.queue(connector, "+4915112340001")
    transport = InMemoryTransport(accept)

    await harness.dispatcher(transport).run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.FAILED
    assert message.failure_reason == "missing_parameter:params.first_name"
    assert transport.requests == []


async def test_secrets_are_redacted_in_the_recorded_request(harness: Harness) -> None:
    connector = await harness.connector(provider_yaml())
    [message_id] = await harness.queue(connector, "+4915112340001")

    await harness.dispatcher(InMemoryTransport(accept)).run_once(harness.clock.now)

    [detail] = attempt_details(await harness.message(message_id))
    assert "key-123" not in json.dumps(detail)
    request = detail["request"]
    assert isinstance(request, dict)
    assert ["Authorization", "Bearer ***"] in request["headers"]


async def test_timeouts_are_retried_then_exhausted(harness: Harness) -> None:
    connector = await harness.connector(provider_yaml())
    [message_id] = await harness.queue(connector, "+4915112340001")

    def time_out(request: HttpRequest) -> HttpResponse:
        raise TransportError("timeout", "no answer within 15 s", retryable=True)

    dispatcher = harness.dispatcher(InMemoryTransport(time_out))
    await dispatcher.run_once(harness.clock.now)
    message = await harness.message(message_id)
    assert message.status is MessageStatus.QUEUED
    assert message.failure_reason == "timeout: no answer within 15 s"
    assert message.next_attempt_at is not None

    harness.clock.set(message.next_attempt_at)
    await dispatcher.run_once(harness.clock.now)
    message = await harness.message(message_id)
    assert message.status is MessageStatus.FAILED
    assert message.failure_reason == "retries_exhausted: timeout: no answer within 15 s"
    assert message.attempts == 2


async def test_refused_target_fails_at_once_without_sending(
    harness: Harness, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(provider_yaml(url="http://169.254.169.254/latest/send"))
    [message_id] = await harness.queue(connector, "+4915112340001")

    await harness.dispatcher(transport).run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.FAILED
    assert message.failure_reason is not None
    assert message.failure_reason.startswith("blocked_address: 169.254.169.254")


async def test_message_accepted_before_a_crash_is_not_sent_again(harness: Harness) -> None:
    connector = await harness.connector(provider_yaml())
    [message_id] = await harness.queue(connector, "+4915112340001")
    # A worker claims the message, the provider accepts it, the worker dies before recording.
    await claim_due_messages(
        harness.database,
        connector_id=connector.id,
        worker_id="crashed-worker",
        limit=10,
        lease_seconds=30,
        now=harness.clock.now,
    )
    async with harness.database.transaction() as conn:
        await conn.execute(
            insert(provider_ids).values(
                connector_id=connector.id, provider_id="p-early", message_id=message_id
            )
        )
    transport = InMemoryTransport(accept)

    harness.clock.advance(31)  # the lease expires
    await harness.dispatcher(transport).run_once(harness.clock.now)

    assert transport.requests == []
    message = await harness.message(message_id)
    assert message.status is MessageStatus.SENT
    [detail] = attempt_details(message)
    assert "already accepted" in str(detail["note"])


async def test_rate_limit_paces_requests(harness: Harness) -> None:
    connector = await harness.connector(
        provider_yaml(rate_limit="{per_second: 2, burst: 1, concurrency: 4}")
    )
    ids = await harness.queue(connector, *[f"+49151123400{i:02d}" for i in range(5)])
    transport = InMemoryTransport(accept)

    await harness.dispatcher(transport).run_once(harness.clock.now)

    assert len(transport.requests) == 5
    # One at once, then four more at 2/s: exactly 2 s of waiting on the limiter's clock.
    assert abs(sum(harness.monotonic.sleeps) - 2.0) < 1e-6
    for message_id in ids:
        assert (await harness.message(message_id)).status is MessageStatus.SENT


class HookedTransport(InMemoryTransport):
    """Answers like `InMemoryTransport`; notes which requests came with a `before_write`."""

    def __init__(self) -> None:
        super().__init__(accept)
        self.hooked: list[bool] = []

    async def send(
        self, request: HttpRequest, *, timeout: float, before_write: BeforeWrite | None = None
    ) -> HttpResponse:
        self.hooked.append(before_write is not None)
        return await super().send(request, timeout=timeout, before_write=before_write)


async def test_a_rate_limited_connector_paces_its_writes_too(harness: Harness) -> None:
    limited = await harness.connector(
        provider_yaml(rate_limit="{per_second: 2, burst: 1, concurrency: 4}")
    )
    await harness.queue(limited, "+4915112340001", "+4915112340002")
    limited_transport = HookedTransport()
    await harness.dispatcher(limited_transport).run_once(harness.clock.now)
    open_connector = await harness.connector(provider_yaml().replace("name: acme", "name: open"))
    await harness.queue(open_connector, "+4915112340003")
    open_transport = HookedTransport()
    await harness.dispatcher(open_transport).run_once(harness.clock.now)

    assert limited_transport.hooked == [True, True]
    assert open_transport.hooked == [False]
    # The writes followed their tokens: only the tokens waited (one at once, one at 2/s).
    assert abs(sum(harness.monotonic.sleeps) - 0.5) < 1e-6


async def test_segments_unit_charges_per_segment(harness: Harness) -> None:
    connector = await harness.connector(
        provider_yaml(rate_limit="{per_second: 1, burst: 1, unit: segments}")
    )
    await insert_messages(
        harness.database,
        [
            NewMessage(
                id=new_message_id(),
                connector_id=connector.id,
                to=f"+49151123400{i:02d}",
                created_at=harness.clock.now,
                body="long " * 50,
                segments=3,
            )
            for i in range(2)
        ],
    )
    await harness.dispatcher(InMemoryTransport(accept)).run_once(harness.clock.now)
    # 3 segments with a full bucket of 1, then 3 more: the 2-token debt plus 1 => 3 s.
    assert abs(sum(harness.monotonic.sleeps) - 3.0) < 1e-6


async def test_one_slow_connector_does_not_hold_up_another(harness: Harness) -> None:
    slow = await harness.connector(provider_yaml(url="https://slow.example.com/send"))
    fast_yaml = provider_yaml(url="https://fast.example.com/send").replace(
        "name: acme", "name: fast"
    )
    fast = await harness.connector(fast_yaml)
    [slow_id] = await harness.queue(slow, "+4915112340001")
    [fast_id] = await harness.queue(fast, "+4915112340002")
    release = asyncio.Event()

    async def answer(request: HttpRequest) -> HttpResponse:
        if "slow" in request.url:
            await release.wait()
        return accept(request)

    dispatcher = harness.dispatcher(InMemoryTransport(answer))
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(10):
            while (await harness.message(fast_id)).status is not MessageStatus.SENT:
                await asyncio.sleep(0.01)
        assert (await harness.message(slow_id)).status is MessageStatus.SENDING
        release.set()
        async with asyncio.timeout(10):
            while (await harness.message(slow_id)).status is not MessageStatus.SENT:
                await asyncio.sleep(0.01)
    finally:
        release.set()
        stop.set()
        await running


async def test_notify_wakes_an_idle_dispatcher(harness: Harness) -> None:
    harness.settings = replace(harness.settings, poll_interval_seconds=3600)
    connector = await harness.connector(provider_yaml())
    transport = InMemoryTransport(accept)
    dispatcher = harness.dispatcher(transport)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.05)  # let it go idle: nothing queued, next poll in an hour
        [message_id] = await harness.queue(connector, "+4915112340001")
        dispatcher.notify()
        async with asyncio.timeout(10):
            while (await harness.message(message_id)).status is not MessageStatus.SENT:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running


async def test_stopping_finishes_requests_in_flight_and_releases_the_rest(
    harness: Harness,
) -> None:
    connector = await harness.connector(provider_yaml(rate_limit="{concurrency: 1}"))
    ids = await harness.queue(connector, *[f"+49151123400{i:02d}" for i in range(4)])
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def answer(request: HttpRequest) -> HttpResponse:
        in_flight.set()
        await release.wait()
        return accept(request)

    transport = InMemoryTransport(answer)
    dispatcher = harness.dispatcher(transport)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(10):
        await in_flight.wait()
    stop.set()
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(10):
        await running

    statuses = [(await harness.message(message_id)).status for message_id in ids]
    assert len(transport.requests) == 1
    assert statuses.count(MessageStatus.SENT) == 1
    assert statuses.count(MessageStatus.QUEUED) == 3
    for message_id in ids:
        message = await harness.message(message_id)
        if message.status is MessageStatus.QUEUED:
            assert message.attempts == 0
            assert message.next_attempt_at is not None
            assert message.next_attempt_at <= harness.clock.now + timedelta(days=1)


async def test_sent_message_without_a_report_becomes_unconfirmed(harness: Harness) -> None:
    yaml_text = (
        provider_yaml() + "delivery: {message_id: $.id, status: $.status, window_hours: 1}\n"
    )
    connector = await harness.connector(yaml_text)
    [message_id] = await harness.queue(connector, "+4915112340001")
    await harness.dispatcher(InMemoryTransport(accept)).run_once(harness.clock.now)
    assert (await harness.message(message_id)).status is MessageStatus.SENT

    harness.clock.advance(3601)
    expired: list[list[str]] = []
    reported = asyncio.Event()

    async def on_unconfirmed(ids: list[str]) -> None:
        expired.append(ids)
        reported.set()

    dispatcher = Dispatcher(
        harness.database,
        harness.box,
        InMemoryTransport(accept),
        harness.settings,
        clock=harness.clock,
        on_unconfirmed=on_unconfirmed,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(10):
            await reported.wait()
    finally:
        stop.set()
        await running
    assert expired == [[message_id]]
    assert (await harness.message(message_id)).status is MessageStatus.UNCONFIRMED
