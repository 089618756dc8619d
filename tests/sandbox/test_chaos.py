"""Chaos: errors, resets, timeouts and duplicate, late or out-of-order reports, seeded."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import uvloop

from smsrelay.sandbox.testing import RunningSandbox, running_sandbox

from .conftest import FAST, CallbackReceiver


async def put_chaos(client: aiohttp.ClientSession, base_url: str, **chaos: Any) -> None:
    async with client.put(f"{base_url}/api/chaos", json=chaos) as answer:
        assert answer.status == 200, await answer.text()


async def send(client: aiohttp.ClientSession, base_url: str, to: str, callback_url: str) -> int:
    doc = {"to": to, "body": "hi", "callback_url": callback_url}
    async with client.post(f"{base_url}/api/messages", json=doc) as answer:
        return answer.status


async def test_chaos_settings_can_be_read_and_replaced(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    await put_chaos(client, sbx.base_url, error_rate=0.25, seed=3)
    async with client.get(f"{sbx.base_url}/api/chaos") as answer:
        chaos = await answer.json()
    assert chaos["error_rate"] == 0.25
    assert chaos["seed"] == 3
    assert chaos["dlr_duplicate_rate"] == 0


async def test_invalid_chaos_is_refused_naming_the_field(
    sbx: RunningSandbox, client: aiohttp.ClientSession
) -> None:
    for doc, field in (({"error_rate": 1.5}, "error_rate"), ({"eror_rate": 0.1}, "eror_rate")):
        async with client.put(f"{sbx.base_url}/api/chaos", json=doc) as answer:
            assert answer.status == 400
            assert (await answer.json())["field"] == field
    async with client.get(f"{sbx.base_url}/api/chaos") as answer:
        assert (await answer.json())["error_rate"] == 0  # unchanged


async def test_duplicate_chaos_sends_the_final_report_twice(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await put_chaos(client, sbx.base_url, dlr_duplicate_rate=1, seed=42)
    assert await send(client, sbx.base_url, "+15005550006", receiver.url()) == 200
    first, second = await receiver.wait_for(2)
    assert first.json == second.json
    assert first.json["status"] == "delivered"


async def test_the_same_seed_duplicates_the_same_messages(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async def duplicated_positions() -> list[int]:
        await put_chaos(client, sbx.base_url, dlr_duplicate_rate=0.5, seed=1234)
        receiver.received.clear()
        numbers = [f"+1500555{i:04d}" for i in range(10, 30)]
        for number in numbers:
            assert await send(client, sbx.base_url, number, receiver.url()) == 200
        await sbx.sandbox.wait_idle()
        counts = [sum(c.json["to"] == n for c in receiver.received) for n in numbers]
        assert set(counts) <= {1, 2}
        return [i for i, count in enumerate(counts) if count == 2]

    first_run = await duplicated_positions()
    second_run = await duplicated_positions()
    assert first_run == second_run
    assert 0 < len(first_run) < 20  # a rate of 0.5 duplicates some, not all


async def test_out_of_order_chaos_reports_sent_after_delivered(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await put_chaos(client, sbx.base_url, dlr_out_of_order_rate=1)
    await send(client, sbx.base_url, "+15005550003", receiver.url())
    callbacks = await receiver.wait_for(2)
    await sbx.sandbox.wait_idle()
    assert [c.json["status"] for c in receiver.received] == ["delivered", "sent"]
    assert len(callbacks) == 2


async def test_late_chaos_delays_the_first_report(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with running_sandbox(FAST.model_copy(update={"dlr_late_seconds": 0.3})) as sbx:
        await put_chaos(client, sbx.base_url, dlr_late_rate=1)
        await send(client, sbx.base_url, "+15005550006", receiver.url())
        await receiver.wait_for(1)
        (kept,) = sbx.sandbox.messages()
    assert (kept.callbacks[0].at - kept.received_at).total_seconds() >= 0.25


async def test_error_chaos_answers_500_and_keeps_the_attempt(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await put_chaos(client, sbx.base_url, error_rate=1)
    assert await send(client, sbx.base_url, "+15005550429", receiver.url()) == 500
    (kept,) = sbx.sandbox.messages()
    assert (kept.status, kept.http_status) == ("error", 500)
    await put_chaos(client, sbx.base_url)
    # Chaos errors do not use up the number's own refusals.
    assert await send(client, sbx.base_url, "+15005550429", receiver.url()) == 429


async def test_reset_chaos_drops_the_connection_without_an_answer(
    sbx: RunningSandbox, client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    await put_chaos(client, sbx.base_url, reset_rate=1)
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await send(client, sbx.base_url, "+15005550006", receiver.url())
    (kept,) = sbx.sandbox.messages()
    assert (kept.status, kept.http_status) == ("error", None)
    await put_chaos(client, sbx.base_url)
    assert await send(client, sbx.base_url, "+15005550006", receiver.url()) == 200


def test_reset_chaos_drops_the_connection_under_uvloop_as_serve_runs() -> None:
    # `smsrelay serve` runs uvloop and httptools; the reset reaches the transport there too.
    async def scenario() -> tuple[str, int]:
        async with running_sandbox(FAST) as sbx, aiohttp.ClientSession() as client:
            await put_chaos(client, sbx.base_url, reset_rate=1)
            with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
                await send(client, sbx.base_url, "+15005550006", "http://127.0.0.1:9/dlr")
            (kept,) = sbx.sandbox.messages()
            await put_chaos(client, sbx.base_url)
            again = await send(client, sbx.base_url, "+15005550006", "http://127.0.0.1:9/dlr")
            return kept.status, again

    assert uvloop.run(scenario()) == ("error", 200)


async def test_timeout_chaos_outlasts_a_client_timeout(
    client: aiohttp.ClientSession, receiver: CallbackReceiver
) -> None:
    async with running_sandbox(FAST.model_copy(update={"timeout_seconds": 1.0})) as sbx:
        await put_chaos(client, sbx.base_url, timeout_rate=1)
        doc = {"to": "+15005550006", "body": "hi", "callback_url": receiver.url()}
        with pytest.raises(TimeoutError):
            await client.post(
                f"{sbx.base_url}/api/messages", json=doc, timeout=aiohttp.ClientTimeout(total=0.2)
            )
        # The provider took the message anyway, as a real one would.
        await receiver.wait_for(1)
        assert [m.status for m in sbx.sandbox.messages()] == ["delivered"]
