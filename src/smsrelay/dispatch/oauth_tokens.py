"""OAuth2 client-credentials tokens for connectors, fetched once and shared.

One cache entry per connector version (`(connector_id, version)`): a new version may carry
new credentials. Concurrent sends that find no valid token wait on one refresh instead of
each calling the token endpoint. A token is refreshed ahead of its expiry, and a provider's
401 invalidates it so the next send refreshes once and resends (httpx's auth flow shape).

What the token endpoint says is decided in `connectors.oauth`; this module only performs
the request (through the `Transport`) and keeps the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from smsrelay.connectors.definition import AuthOAuth2
from smsrelay.connectors.oauth import OAuthToken, TokenError, parse_token_response, token_request
from smsrelay.connectors.redaction import redact_text
from smsrelay.dispatch.transport import Transport, TransportError

# Refresh this long before expiry (or half the lifetime for short-lived tokens) so a token
# does not expire between rendering a request and the provider reading it.
REFRESH_AHEAD_SECONDS = 60.0
TOKEN_TIMEOUT_SECONDS = 15.0


class CredentialsError(Exception):
    """The connector's token endpoint did not give a usable token.

    `reason` is machine-readable (`credentials_failing`); `detail` says what the endpoint
    answered. The dispatcher holds the connector's messages as `dispatch_error`.
    """

    def __init__(self, detail: str, *, reason: str = "credentials_failing") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class _Entry:
    token: OAuthToken
    refresh_at: float


class OAuthTokenCache:
    """Access tokens per connector version, with single-flight refresh."""

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.time,
        refresh_ahead_seconds: float = REFRESH_AHEAD_SECONDS,
        timeout_seconds: float = TOKEN_TIMEOUT_SECONDS,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._refresh_ahead = refresh_ahead_seconds
        self._timeout = timeout_seconds
        self._entries: dict[Hashable, _Entry] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self.fetches = 0  # token endpoint calls made, for metrics and tests

    async def access_token(
        self, key: Hashable, auth: AuthOAuth2, secrets: Mapping[str, str]
    ) -> str:
        """A valid access token for the connector version `key`, fetching one if needed."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry.token.access_token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Whoever held the lock before us may have refreshed already.
            entry = self._entries.get(key)
            if entry is not None and self._clock() < entry.refresh_at:
                return entry.token.access_token
            token = await self._fetch(auth, secrets)
            self._entries[key] = _Entry(token, self._refresh_time(token))
            return token.access_token

    def invalidate(self, key: Hashable, access_token: str | None = None) -> None:
        """Forget the token of `key` (after a 401), unless it was already replaced.

        Passing the token that was refused keeps a burst of 401s from throwing away the
        fresh token the first of them already fetched.
        """
        entry = self._entries.get(key)
        if entry is None:
            return
        if access_token is None or entry.token.access_token == access_token:
            del self._entries[key]

    def _refresh_time(self, token: OAuthToken) -> float:
        now = self._clock()
        lifetime = max(0.0, token.expires_at - now)
        return token.expires_at - min(self._refresh_ahead, lifetime / 2)

    async def _fetch(self, auth: AuthOAuth2, secrets: Mapping[str, str]) -> OAuthToken:
        self.fetches += 1
        try:
            request = token_request(auth, secrets)
        except ValueError as exc:  # a RenderError: a secret the token request needs is missing
            raise CredentialsError(f"cannot build the token request: {exc}") from exc
        # Token endpoints echo credentials in their errors: redact before the text is kept.
        hidden = list(secrets.values())
        try:
            response = await self._transport.send(request, timeout=self._timeout)
        except TransportError as exc:
            why = redact_text(str(exc), hidden)
            raise CredentialsError(f"token endpoint {auth.token_url}: {why}") from exc
        try:
            return parse_token_response(response, self._clock())
        except TokenError as exc:
            why = redact_text(str(exc), hidden)
            raise CredentialsError(f"token endpoint {auth.token_url}: {why}") from exc
