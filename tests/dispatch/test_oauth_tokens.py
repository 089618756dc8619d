"""The OAuth2 token cache: single flight, refresh ahead of expiry, invalidation, failures."""

from __future__ import annotations

import asyncio
import json

import pytest

from smsrelay.connectors.definition import AuthOAuth2
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.oauth_tokens import CredentialsError, OAuthTokenCache
from smsrelay.dispatch.transport import InMemoryTransport, TransportError

AUTH = AuthOAuth2(
    type="oauth2",
    token_url="https://auth.example.com/token",
    client_id="{{secret.client_id}}",
    client_secret="{{secret.client_secret}}",
)
SECRETS = {"client_id": "me", "client_secret": "hunter2"}


class TokenEndpoint:
    def __init__(self, expires_in: float = 3600) -> None:
        self.expires_in = expires_in
        self.issued = 0
        self.gate: asyncio.Event | None = None
        self.status = 200

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            refusal = {"error": "invalid_client", "error_description": "bad secret"}
            return HttpResponse(
                self.status, {"Content-Type": "application/json"}, json.dumps(refusal).encode()
            )
        self.issued += 1
        body: dict[str, object] = {"access_token": f"t{self.issued}", "expires_in": self.expires_in}
        return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_callers_share_one_fetch() -> None:
    endpoint = TokenEndpoint()
    endpoint.gate = asyncio.Event()
    cache = OAuthTokenCache(InMemoryTransport(endpoint), clock=Clock())

    waiting = [asyncio.create_task(cache.access_token((1, 1), AUTH, SECRETS)) for _ in range(20)]
    await asyncio.sleep(0)
    endpoint.gate.set()
    tokens = await asyncio.gather(*waiting)

    assert tokens == ["t1"] * 20
    assert cache.fetches == 1


async def test_token_is_refreshed_ahead_of_expiry() -> None:
    clock = Clock()
    endpoint = TokenEndpoint(expires_in=600)
    cache = OAuthTokenCache(InMemoryTransport(endpoint), clock=clock)

    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    clock.now += 539  # 61 s before expiry: still fine
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    clock.now += 2  # within the last minute: refresh before it runs out
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t2"


async def test_short_lived_token_is_refreshed_at_half_its_life() -> None:
    clock = Clock()
    cache = OAuthTokenCache(InMemoryTransport(TokenEndpoint(expires_in=30)), clock=clock)
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    clock.now += 14
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    clock.now += 2
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t2"


async def test_invalidate_forgets_only_the_refused_token() -> None:
    cache = OAuthTokenCache(InMemoryTransport(TokenEndpoint()), clock=Clock())
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    cache.invalidate((1, 1), "t1")
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t2"
    # A late 401 for t1 must not throw away t2.
    cache.invalidate((1, 1), "t1")
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t2"
    assert cache.fetches == 2


async def test_each_connector_version_has_its_own_token() -> None:
    cache = OAuthTokenCache(InMemoryTransport(TokenEndpoint()), clock=Clock())
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"
    assert await cache.access_token((1, 2), AUTH, SECRETS) == "t2"
    assert await cache.access_token((1, 1), AUTH, SECRETS) == "t1"


async def test_refused_credentials_raise_credentials_error_without_the_secret() -> None:
    endpoint = TokenEndpoint()
    endpoint.status = 401
    cache = OAuthTokenCache(InMemoryTransport(endpoint), clock=Clock())
    with pytest.raises(CredentialsError) as caught:
        await cache.access_token((1, 1), AUTH, SECRETS)
    assert caught.value.reason == "credentials_failing"
    assert "HTTP 401" in caught.value.detail
    assert "invalid_client" in caught.value.detail
    assert "hunter2" not in str(caught.value)


async def test_unreachable_token_endpoint_is_a_credentials_error() -> None:
    def down(request: HttpRequest) -> HttpResponse:
        raise TransportError("connection_error", "connection refused", retryable=True)

    cache = OAuthTokenCache(InMemoryTransport(down), clock=Clock())
    with pytest.raises(CredentialsError, match="connection refused"):
        await cache.access_token((1, 1), AUTH, SECRETS)


async def test_missing_secret_is_a_credentials_error() -> None:
    cache = OAuthTokenCache(InMemoryTransport(TokenEndpoint()), clock=Clock())
    with pytest.raises(CredentialsError, match="client_secret"):
        await cache.access_token((1, 1), AUTH, {"client_id": "me"})
