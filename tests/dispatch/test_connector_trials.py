"""Trying a connector (dispatch.connector_trials): preview, test send, its wait and verdicts."""

from __future__ import annotations

import asyncio
import json

import pytest

from smsrelay.connectors.errors import RenderError
from smsrelay.connectors.exchange import HttpRequest, HttpResponse, OutboundMessage
from smsrelay.dispatch.connector_trials import preview_trace, send_test_message
from smsrelay.dispatch.transport import InMemoryTransport
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.messages import get_message, new_message_id

from .harness import Harness
from .test_worker_pipeline import provider_yaml

CALLBACK = "http://127.0.0.1:9/dlr/token"


def answer(status: int, document: dict[str, str]) -> HttpResponse:
    return HttpResponse(status, {"Content-Type": "application/json"}, json.dumps(document).encode())


def outbound(body: str = "Hello") -> OutboundMessage:
    return OutboundMessage(message_id=new_message_id(), to="+4915112340001", body=body)


async def test_a_preview_renders_the_request_with_secrets_masked(harness: Harness) -> None:
    connector = await harness.connector(provider_yaml())
    message = outbound("Your code is 1234")

    trace = preview_trace(connector.definition, message, CALLBACK)

    assert ["Authorization", "Bearer ***"] in trace["headers"]
    assert "key-123" not in json.dumps(trace)
    assert json.loads(trace["body"]) == {
        "to": "+4915112340001",
        "text": "Your code is 1234",
        "ref": message.message_id,
    }


async def test_a_message_the_connector_cannot_render_is_refused_and_never_queued(
    harness: Harness,
) -> None:
    connector = await harness.connector(provider_yaml(text="Hi {{params.first_name}}: {{body}}"))
    message = outbound()
    woken: list[bool] = []

    with pytest.raises(RenderError) as refused:
        await send_test_message(
            harness.database,
            connector,
            message,
            callback_url=CALLBACK,
            notify=lambda: woken.append(True),
        )

    assert refused.value.reason == "missing_parameter:params.first_name"
    assert woken == []
    assert await get_message(harness.database, message.message_id) is None


async def test_without_a_dispatcher_the_wait_ends_in_a_timeout_saying_what_to_run(
    harness: Harness,
) -> None:
    connector = await harness.connector(provider_yaml())
    message = outbound()

    result = await send_test_message(
        harness.database,
        connector,
        message,
        callback_url=CALLBACK,
        notify=lambda: None,
        wait_seconds=0.2,
    )

    assert result.timed_out and result.status == "queued"
    assert result.error is not None and "smsrelay worker" in result.error
    assert (await harness.message(message.message_id)).status is MessageStatus.QUEUED


@pytest.mark.parametrize(
    ("status", "document", "verdict", "error"),
    [
        (200, {"id": "p-1"}, "accepted", None),
        (400, {"error": "unknown number"}, "rejected", "unknown number"),
        (503, {"error": "busy"}, "retry", "busy"),
    ],
)
async def test_the_first_attempt_is_traced_with_its_verdict(
    harness: Harness, status: int, document: dict[str, str], verdict: str, error: str | None
) -> None:
    connector = await harness.connector(provider_yaml())
    message = outbound()

    def provider(request: HttpRequest) -> HttpResponse:
        return answer(status, document)

    dispatcher = harness.dispatcher(InMemoryTransport(provider))

    async def dispatch_when_woken() -> None:
        await woken.wait()
        await dispatcher.run_once(harness.clock.now)

    woken = asyncio.Event()
    dispatching = asyncio.create_task(dispatch_when_woken())
    result = await send_test_message(
        harness.database,
        connector,
        message,
        callback_url=CALLBACK,
        notify=woken.set,
        wait_seconds=10,
    )
    await dispatching

    assert result.verdict == verdict
    assert result.provider_ids == (["p-1"] if verdict == "accepted" else [])
    assert result.error is None if error is None else error in (result.error or "")
    assert (
        result.request is not None
        and ["Authorization", "Bearer ***"] in (result.request["headers"])
    )
    assert result.response is not None and result.response["status"] == status
