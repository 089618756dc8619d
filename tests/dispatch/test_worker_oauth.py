"""OAuth2 connectors: one token for many sends, refresh after a 401, a failing token endpoint.

The provider and its token endpoint are a small aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web

from smsrelay.dispatch.transport import AiohttpTransport
from smsrelay.store.lifecycle import MessageStatus

from .harness import Harness


@dataclass
class OAuthProvider:
    """A provider that sends only with a valid bearer token from its own token endpoint."""

    base_url: str = ""
    token_endpoint_up: bool = True
    valid_tokens: set[str] = field(default_factory=set)
    token_requests: list[web.Request] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    sends: list[str] = field(default_factory=list)  # the Authorization header of each send
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(request)
        self.token_forms.append(dict(await request.post()))  # type: ignore[arg-type]
        if not self.token_endpoint_up:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        token = f"tok-{next(self._numbers)}"
        self.valid_tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        )

    async def send(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.sends.append(authorization)
        if authorization.removeprefix("Bearer ") not in self.valid_tokens:
            return web.json_response({"error": "invalid token"}, status=401)
        payload = await request.json()
        return web.json_response({"id": f"p-{payload['ref']}"})

    def revoke_all(self) -> None:
        self.valid_tokens.clear()

    def connector_yaml(self, **retry: float) -> str:
        retry_text = ", ".join(f"{k}: {v}" for k, v in retry.items())
        return f"""
name: oauth-provider
request:
  url: "{self.base_url}/send"
  auth:
    type: oauth2
    token_url: "{self.base_url}/token"
    client_id: "{{{{secret.client_id}}}}"
    client_secret: "{{{{secret.client_secret}}}}"
  body:
    json: {{to: "{{{{to}}}}", text: "{{{{body}}}}", ref: "{{{{message_id}}}}"}}
response:
  message_id: $.id
  error: $.error
retry: {{{retry_text}}}
secrets: {{client_id: the-client, client_secret: the-secret}}
"""


@pytest.fixture
async def provider() -> AsyncIterator[OAuthProvider]:
    state = OAuthProvider()
    app = web.Application()
    app.router.add_post("/token", state.token)
    app.router.add_post("/send", state.send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_token_is_fetched_once_for_many_sends(
    harness: Harness, provider: OAuthProvider, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(provider.connector_yaml())
    first = await harness.queue(connector, *[f"+49151123400{i:02d}" for i in range(10)])
    dispatcher = harness.dispatcher(transport)

    await dispatcher.run_once(harness.clock.now)
    second = await harness.queue(connector, "+4915112349999")
    await dispatcher.run_once(harness.clock.now)

    assert len(provider.token_requests) == 1
    assert provider.token_forms[0]["grant_type"] == "client_credentials"
    assert provider.token_requests[0].headers["Authorization"].startswith("Basic ")
    assert provider.sends == ["Bearer tok-1"] * 11
    for message_id in first + second:
        message = await harness.message(message_id)
        assert message.status is MessageStatus.SENT
        assert message.provider_ids == (f"p-{message_id}",)
        # The token is a credential: it never appears in the stored trace.
        trace = str([event.detail for event in message.events])
        assert "tok-1" not in trace
        assert "the-secret" not in trace


async def test_a_401_refreshes_the_token_once_and_resends(
    harness: Harness, provider: OAuthProvider, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(provider.connector_yaml())
    dispatcher = harness.dispatcher(transport)
    await harness.queue(connector, "+4915112340001")
    await dispatcher.run_once(harness.clock.now)

    provider.revoke_all()  # the provider drops tok-1 before its expiry
    [message_id] = await harness.queue(connector, "+4915112340002")
    await dispatcher.run_once(harness.clock.now)

    assert len(provider.token_requests) == 2
    assert provider.sends == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    message = await harness.message(message_id)
    assert message.status is MessageStatus.SENT
    assert message.attempts == 1


async def test_token_endpoint_down_holds_messages_until_it_recovers(
    harness: Harness, provider: OAuthProvider, transport: AiohttpTransport
) -> None:
    connector = await harness.connector(provider.connector_yaml())
    [message_id] = await harness.queue(connector, "+4915112340003")
    dispatcher = harness.dispatcher(transport)
    provider.token_endpoint_up = False

    await dispatcher.run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.DISPATCH_ERROR
    assert message.failure_reason is not None
    assert message.failure_reason.startswith("credentials_failing: ")
    assert "HTTP 503" in message.failure_reason
    assert message.next_attempt_at == harness.clock.now + timedelta(seconds=120)
    assert provider.sends == []

    provider.token_endpoint_up = True
    assert await dispatcher.run_once(harness.clock.now + timedelta(seconds=60)) == 0
    harness.clock.advance(120)
    await dispatcher.run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.SENT
    assert provider.sends == ["Bearer tok-1"]


async def test_credentials_failing_past_the_retry_window_fail_the_messages(
    harness: Harness, provider: OAuthProvider, transport: AiohttpTransport
) -> None:
    # Window: max_seconds * max_attempts = 240 s here.
    connector = await harness.connector(provider.connector_yaml(max_attempts=4, max_seconds=60))
    [message_id] = await harness.queue(connector, "+4915112340004")
    dispatcher = harness.dispatcher(transport)
    provider.token_endpoint_up = False

    statuses = []
    for _ in range(3):
        await dispatcher.run_once(harness.clock.now)
        statuses.append((await harness.message(message_id)).status)
        harness.clock.advance(120)

    assert statuses == [
        MessageStatus.DISPATCH_ERROR,
        MessageStatus.DISPATCH_ERROR,
        MessageStatus.FAILED,
    ]
    message = await harness.message(message_id)
    assert message.failure_reason == "credentials_failing"
    assert provider.sends == []


async def test_the_hold_window_is_the_messages_own_and_survives_a_restarted_worker(
    harness: Harness, provider: OAuthProvider, transport: AiohttpTransport
) -> None:
    # Window 240 s, as above. The first worker holds the message twice, then stops; the
    # one after it (nothing in memory) fails it when the window that began at the first
    # hold ends, instead of starting a window of its own.
    connector = await harness.connector(provider.connector_yaml(max_attempts=4, max_seconds=60))
    [message_id] = await harness.queue(connector, "+4915112340005")
    provider.token_endpoint_up = False
    first = harness.dispatcher(transport)
    for _ in range(2):
        await first.run_once(harness.clock.now)
        assert (await harness.message(message_id)).status is MessageStatus.DISPATCH_ERROR
        harness.clock.advance(120)

    await harness.dispatcher(transport).run_once(harness.clock.now)

    message = await harness.message(message_id)
    assert message.status is MessageStatus.FAILED
    assert message.failure_reason == "credentials_failing"
