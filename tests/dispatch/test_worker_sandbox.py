"""The dispatcher end to end against the sandbox provider over real HTTP on 127.0.0.1.

The dispatcher's wall clock is injected: a retry is driven by moving the clock to the
recorded next attempt time, never by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from smsrelay.dispatch.transport import AiohttpTransport
from smsrelay.sandbox.settings import SandboxSettings
from smsrelay.sandbox.testing import RunningSandbox, running_sandbox
from smsrelay.store.lifecycle import MessageStatus

from .harness import Harness, attempt_details, attempt_times


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    # Delivery reports go to a closed port; one try each keeps shutdown quick.
    settings = SandboxSettings(dlr_delay_seconds=0, callback_attempts=1, callback_timeout_seconds=1)
    async with running_sandbox(settings) as running:
        yield running


async def test_queued_message_is_sent_with_the_provider_id(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(sandbox.connector_yaml())
    [message_id] = await harness.queue(connector, "+4915112340042")
    dispatcher = harness.dispatcher(transport)

    assert await dispatcher.run_once(harness.clock.now) == 1

    message = await harness.message(message_id)
    [received] = sandbox.sandbox.messages()
    assert message.status is MessageStatus.SENT
    assert message.provider_ids == (received.id,)
    assert message.attempts == 1
    assert received.client_ref == message_id  # our id travels as the client reference
    assert received.callback_url == f"http://127.0.0.1:9/dlr/{connector.dlr_token}"
    # The delivery-report deadline: window_hours after sending.
    assert message.next_attempt_at == harness.clock.now + timedelta(hours=72)
    [detail] = attempt_details(message)
    request = detail["request"]
    assert isinstance(request, dict)
    assert request["method"] == "POST"
    # The sandbox connector keeps its base URL as a secret: traces never show secrets.
    assert request["url"] == "***/api/messages"
    assert message_id in request["body"]
    response = detail["response"]
    assert isinstance(response, dict) and response["status"] == 200


async def test_nothing_due_means_nothing_sent(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    await harness.connector(sandbox.connector_yaml())
    assert await harness.dispatcher(transport).run_once(harness.clock.now) == 0
    assert sandbox.sandbox.messages() == []


async def test_server_errors_are_retried_with_backoff_until_sent(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(sandbox.connector_yaml())
    [message_id] = await harness.queue(connector, "+4915112340500")
    dispatcher = harness.dispatcher(transport)

    for expected_attempts in (1, 2):
        await dispatcher.run_once(harness.clock.now)
        message = await harness.message(message_id)
        assert message.status is MessageStatus.QUEUED
        assert message.attempts == expected_attempts
        assert message.failure_reason is not None and "500" in message.failure_reason
        assert message.next_attempt_at is not None
        assert message.next_attempt_at > harness.clock.now
        # Not due before its time.
        assert await dispatcher.run_once(message.next_attempt_at - timedelta(seconds=0.1)) == 0
        harness.clock.set(message.next_attempt_at)

    await dispatcher.run_once(harness.clock.now)
    message = await harness.message(message_id)
    assert message.status is MessageStatus.SENT
    assert message.attempts == 3
    assert len(message.provider_ids) == 1


async def test_rate_limited_answer_honours_retry_after(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(sandbox.connector_yaml())
    [message_id] = await harness.queue(connector, "+4915112340429")
    dispatcher = harness.dispatcher(transport)

    await dispatcher.run_once(harness.clock.now)
    message = await harness.message(message_id)
    assert message.status is MessageStatus.QUEUED
    assert message.next_attempt_at is not None
    # The backoff alone would be 0.5-1 s; the provider asked for 2 s.
    assert message.next_attempt_at >= harness.clock.now + timedelta(seconds=2)
    assert await dispatcher.run_once(harness.clock.now + timedelta(seconds=1.5)) == 0

    harness.clock.set(message.next_attempt_at)
    await dispatcher.run_once(harness.clock.now)
    message = await harness.message(message_id)
    assert message.status is MessageStatus.SENT
    first, second = attempt_times(message)
    assert second - first >= timedelta(seconds=2)


async def test_permanent_error_fails_with_the_providers_error(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(sandbox.connector_yaml())
    [message_id] = await harness.queue(connector, "+4915112340400")

    await harness.dispatcher(transport).run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.FAILED
    assert message.failure_reason is not None
    assert "invalid destination" in message.failure_reason
    assert message.attempts == 1
    assert message.next_attempt_at is None


async def test_batch_connector_sends_many_messages_in_one_request(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(sandbox.connector_yaml(batch=True))
    numbers = [f"+49151123{i:05d}" for i in range(10, 17)]
    ids = await harness.queue(connector, *numbers)
    dispatcher = harness.dispatcher(transport)

    assert await dispatcher.run_once(harness.clock.now) == len(ids)

    received = sandbox.sandbox.messages(limit=100)
    assert sorted(m.to for m in received) == sorted(numbers)
    assert len({id(m.request) for m in received}) == 1  # one HTTP request carried them all
    by_ref = {m.client_ref: m.id for m in received}
    for message_id in ids:
        message = await harness.message(message_id)
        assert message.status is MessageStatus.SENT
        assert message.provider_ids == (by_ref[message_id],)
        [detail] = attempt_details(message)
        assert detail["batch_size"] == len(ids)
    # One group commit for the whole batch, not one transaction per message.
    assert dispatcher.writer.flushes == 1


async def test_batch_size_splits_requests(
    harness: Harness, sandbox: RunningSandbox, transport: AiohttpTransport
) -> None:
    yaml_text = sandbox.connector_yaml(batch=True).replace("size: 1000", "size: 3")
    connector = await harness.connector(yaml_text)
    await harness.queue(connector, *[f"+49151123{i:05d}" for i in range(20, 27)])

    await harness.dispatcher(transport).run_once(harness.clock.now)

    received = sandbox.sandbox.messages(limit=100)
    assert len(received) == 7
    assert len({id(m.request) for m in received}) == 3  # 3 + 3 + 1
