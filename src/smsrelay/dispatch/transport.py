"""The only place smsrelay performs outbound HTTP (the httpx "transport" seam).

A `Transport` takes an `HttpRequest` and returns an `HttpResponse` or raises
`TransportError`, whose `retryable` flag tells the sender loop what to do (as courier's
`errors.go`). Two real ones share everything around a hop (`_HopTransport`: bodies read up
to a cap, redirects followed by hand, the deadline): `HttpTransport`, the default, over
smsrelay's own HTTP/1.1 client (`http11`), and `AiohttpTransport` over one pooled
`aiohttp.ClientSession` (`SMSRELAY_HTTP_CLIENT`, `outbound_transport`). `InMemoryTransport`
answers from a function, for tests.

Every hop, redirects included, goes through the outbound guard (`address_guard`, SPEC §8).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol, Self

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.address_guard import (
    BlockedAddressError,
    GuardedResolver,
    OutboundPolicy,
    blocked_reason,
    target_refusal,
)
from smsrelay.dispatch.http11 import ConnectionPool, HttpProtocolError, request_head
from smsrelay.settings import HTTP_CLIENTS

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
USER_AGENT = "smsrelay/0.1"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class TransportError(Exception):
    """A request got no HTTP answer; `retryable` says whether trying again may help.

    `reason` is machine-readable (`timeout`, `connection_error`, `blocked_address: …`);
    `detail` says what happened in words a user can act on.
    """

    def __init__(self, reason: str, detail: str, *, retryable: bool) -> None:
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{reason}: {detail}" if detail and detail != reason else reason)


# Awaited once per request, just before its first bytes are written (`Transport.send`).
BeforeWrite = Callable[[], Awaitable[None]]


class Transport(Protocol):
    """Performs one HTTP request."""

    async def send(
        self, request: HttpRequest, *, timeout: float, before_write: BeforeWrite | None = None
    ) -> HttpResponse:
        """Send `request`; return the response or raise `TransportError`.

        `before_write` is awaited once, as late as the transport can: just before the
        request's first bytes are written (a rate limit kept where requests leave).
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# ---------------------------------------------------------------- aiohttp transport


def _redirect_method(status: int, method: str) -> str:
    # What browsers and httpx do: 303 always becomes GET, 301/302 turn a POST into a GET.
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def _same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _response_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    headers = dict(resp.headers.items())
    if len(headers) == len(resp.headers):
        return headers  # no repeated name: nothing to join
    headers = {}
    for key, value in resp.headers.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _with_user_agent(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The headers, with our User-Agent unless the connector sets one."""
    if any(name.lower() == "user-agent" for name, _ in headers):
        return headers
    return (*headers, ("User-Agent", USER_AGENT))


@functools.lru_cache(maxsize=1024)
def _outgoing_headers(
    headers: tuple[tuple[str, str], ...],
) -> tuple[CIMultiDictProxy[str], tuple[str, ...] | None]:
    """The headers as sent (our User-Agent unless the connector sets one) and the automatic
    headers aiohttp must not add; a connector's requests all carry the same headers."""
    names = {k.lower() for k, _ in headers}
    headers = _with_user_agent(headers)
    # None rather than an empty list: aiohttp copies the headers to honour any list at all.
    skip = None if "content-type" in names else ("Content-Type",)
    # Read-only: the same object goes with every request of the connector.
    return CIMultiDictProxy(CIMultiDict(headers)), skip


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """Read at most `cap` bytes of the body; a larger body is cut (and the connection dropped)."""
    length = resp.content_length
    if length is not None and length < cap:
        # The common case, a small answer of declared length: read it whole.
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            resp.close()
            break
    return b"".join(chunks)[:cap]


async def _on_chunk_sent(
    _session: aiohttp.ClientSession,
    context: SimpleNamespace,
    _params: aiohttp.TraceRequestChunkSentParams,
) -> None:
    """aiohttp calls this before it writes each chunk of a body (with the headers, the first
    time): the first call of a request runs the sender's `before_write`."""
    hook = context.trace_request_ctx
    if hook is not None:
        await hook.run()


@dataclass(slots=True)
class _WriteHook:
    """A request's `before_write`, run once (a body may go out in several chunks)."""

    before_write: BeforeWrite
    done: bool = False

    async def run(self) -> None:
        if not self.done:
            self.done = True
            await self.before_write()


def _timed_out(url: URL, timeout: float) -> TransportError:
    return TransportError(
        "timeout", f"no answer from {url.host} within {timeout:g} s", retryable=True
    )


def _blocked(error: BlockedAddressError) -> TransportError:
    """The guard refused the address a name resolved to: nothing was sent."""
    reason = blocked_reason(error.host, error.address, error.why)
    return TransportError(reason, "nothing was sent", retryable=False)


class _HopTransport:
    """What every real transport does around one hop (`_send_once`): the outbound guard's
    check of each target, the deadline over all hops, redirects followed by hand (credentials
    dropped across origins), the `before_write` hook run once."""

    def __init__(
        self,
        *,
        allow_hosts: Sequence[str] = (),
        connection_limit: int = 256,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.policy = OutboundPolicy(allow_hosts)
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self._connection_limit = connection_limit
        # Resolves names for the guard (`GuardedResolver`); None: the system's resolver.
        self._inner_resolver = resolver
        # (scheme, host) pairs already found acceptable: a provider's URL is checked once
        # per host, not once per message (the refusal depends on nothing else).
        self._accepted_targets: set[tuple[str, str]] = set()
        self._urls: dict[str, URL] = {}

    async def send(
        self, request: HttpRequest, *, timeout: float, before_write: BeforeWrite | None = None
    ) -> HttpResponse:
        """Send `request`, following up to `max_redirects` redirects, each target checked."""
        deadline = time.monotonic() + timeout
        hook = None if before_write is None else _WriteHook(before_write)
        method, url = request.method.upper(), self._url(request.url)
        headers = request.headers
        body: bytes | None = request.body or None
        for hop in range(self.max_redirects + 1):
            origin = (url.scheme, url.host or "")
            if origin not in self._accepted_targets:
                refusal = target_refusal(url, self.policy)
                if refusal is not None:
                    raise TransportError(refusal.reason, refusal.detail, retryable=False)
                if len(self._accepted_targets) < 10_000:
                    self._accepted_targets.add(origin)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError("timeout", f"no answer within {timeout:g} s", retryable=True)
            pending = hook if hook is not None and not hook.done else None
            status, resp_headers, resp_body = await self._send_once(
                method, url, headers, body, timeout if hop == 0 else remaining, timeout, pending
            )
            if status not in _REDIRECT_STATUSES:
                return HttpResponse(status, resp_headers, resp_body)
            location = resp_headers.get("Location") or resp_headers.get("location")
            if not location:
                return HttpResponse(status, resp_headers, resp_body)
            try:
                target = url.join(URL(location))
            except ValueError as exc:
                raise TransportError(
                    "invalid_redirect", f"redirect to {location!r}: {exc}", retryable=False
                ) from exc
            new_method = _redirect_method(status, method)
            if new_method != method:
                body = None
                headers = tuple(
                    (k, v)
                    for k, v in headers
                    if k.lower() not in ("content-type", "content-length")
                )
            if not _same_origin(url, target):
                # Credentials meant for the provider must not follow it to another host.
                headers = tuple(
                    (k, v) for k, v in headers if k.lower() not in ("authorization", "cookie")
                )
            method, url = new_method, target
        raise TransportError(
            "too_many_redirects",
            f"more than {self.max_redirects} redirects starting at {request.url}",
            retryable=False,
        )

    def _url(self, text: str) -> URL:
        """The parsed URL; a connector sends to the same one again and again."""
        url = self._urls.get(text)
        if url is None:
            url = URL(text, encoded=True)
            if len(self._urls) < 10_000:
                self._urls[text] = url
        return url

    async def _send_once(
        self,
        method: str,
        url: URL,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None,
        remaining: float,
        timeout: float,
        hook: _WriteHook | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One hop within `remaining` seconds (`timeout` for messages): (status, headers,
        body cut at `max_response_bytes`); `hook`, if not run yet, just before writing."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AiohttpTransport(_HopTransport):
    """Outbound HTTP over one shared, pooled `aiohttp.ClientSession`, behind the guard
    (`SMSRELAY_HTTP_CLIENT=aiohttp`).

    Requests with a `before_write` go through a second session whose trace hook runs it:
    aiohttp writes a body from a task of its own, a loop turn after the call, and the hook
    runs in that task just before the write. The first session has no trace hooks, which
    would cost every request.
    """

    def __init__(
        self,
        *,
        allow_hosts: Sequence[str] = (),
        connection_limit: int = 256,
        connection_limit_per_host: int = 0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(
            allow_hosts=allow_hosts,
            connection_limit=connection_limit,
            max_response_bytes=max_response_bytes,
            max_redirects=max_redirects,
            resolver=resolver,
        )
        self._connection_limit_per_host = connection_limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._hooked_session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _client(self, *, hooked: bool = False) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be built inside the running loop.
        session = self._hooked_session if hooked else self._session
        if session is None or session.closed:
            session = self._new_session(hooked)
            if hooked:
                self._hooked_session = session
            else:
                self._session = session
        return session

    def _new_session(self, hooked: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._connection_limit,
            limit_per_host=self._connection_limit_per_host,
            resolver=GuardedResolver(self.policy, self._inner_resolver),
            ttl_dns_cache=60,
        )
        traces = []
        if hooked:
            trace = aiohttp.TraceConfig()
            trace.on_request_chunk_sent.append(_on_chunk_sent)
            traces.append(trace)
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # a proxy from the environment would bypass the guard
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            trace_configs=traces or None,
        )

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """The first hop's timeout object, one per connector timeout."""
        found = self._timeouts.get(seconds)
        if found is None:
            found = aiohttp.ClientTimeout(total=seconds)
            if len(self._timeouts) < 1_000:
                self._timeouts[seconds] = found
        return found

    async def _send_once(
        self,
        method: str,
        url: URL,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None,
        remaining: float,
        timeout: float,
        hook: _WriteHook | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One hop; a `hook` not yet run goes through the hooked session."""
        if hook is not None and body is None:
            # Without a body aiohttp writes the request inside the call: run it here.
            await hook.run()
            hook = None
        sent_headers, skip = _outgoing_headers(headers)
        try:
            async with self._client(hooked=hook is not None).request(
                method,
                url,
                headers=sent_headers,
                data=body,
                allow_redirects=False,
                timeout=(
                    self._timeout(timeout)
                    if remaining == timeout
                    else aiohttp.ClientTimeout(total=remaining)
                ),
                skip_auto_headers=skip,
                trace_request_ctx=hook,
            ) as resp:
                data = await _read_capped(resp, self.max_response_bytes)
                return resp.status, _response_headers(resp), data
        except TimeoutError as exc:
            raise _timed_out(url, timeout) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                raise _blocked(exc.os_error) from exc
            if isinstance(exc, aiohttp.ClientSSLError):
                raise TransportError("tls_error", str(exc), retryable=False) from exc
            raise TransportError("connection_error", str(exc), retryable=True) from exc
        except aiohttp.InvalidURL as exc:
            raise TransportError("invalid_url", str(exc), retryable=False) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Reset, disconnect, truncated payload: the provider may try again fine.
            raise TransportError(
                "connection_error", f"{type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def aclose(self) -> None:
        """Close the shared sessions and their connections."""
        for session in (self._session, self._hooked_session):
            if session is not None:
                await session.close()
        self._session = self._hooked_session = None


class HttpTransport(_HopTransport):
    """Outbound HTTP over smsrelay's own pooled HTTP/1.1 client (`dispatch.http11`), behind
    the guard: the default (`SMSRELAY_HTTP_CLIENT=builtin`), at ~1/6 of aiohttp's CPU per
    request. The same contract as `AiohttpTransport`, checked by the same tests."""

    _pool: ConnectionPool | None = None

    def _connections(self) -> ConnectionPool:
        # Created on first use, inside the running loop (its semaphore belongs to it).
        if self._pool is None:
            self._pool = ConnectionPool(
                GuardedResolver(self.policy, self._inner_resolver),
                limit=self._connection_limit,
            )
        return self._pool

    async def _send_once(
        self,
        method: str,
        url: URL,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None,
        remaining: float,
        timeout: float,
        hook: _WriteHook | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One hop within `remaining` seconds."""
        try:
            head = _request_head(method, url, headers)
        except ValueError as exc:
            raise TransportError("invalid_request", str(exc), retryable=False) from exc
        try:
            answer = await self._connections().request(
                method,
                url,
                head,
                body,
                cap=self.max_response_bytes,
                deadline=asyncio.get_running_loop().time() + remaining,
                before_write=None if hook is None else hook.run,
            )
        except TimeoutError as exc:
            raise _timed_out(url, timeout) from exc
        except BlockedAddressError as exc:
            raise _blocked(exc) from exc
        except ssl.SSLError as exc:
            raise TransportError("tls_error", str(exc), retryable=False) from exc
        except HttpProtocolError as exc:
            raise TransportError(
                "connection_error", f"{type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except OSError as exc:
            # Refused, reset, unreachable, no such name: the provider may answer next time.
            raise TransportError("connection_error", str(exc), retryable=True) from exc
        return answer.status, answer.headers, answer.body

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@functools.lru_cache(maxsize=1024)
def _request_head(method: str, url: URL, headers: tuple[tuple[str, str], ...]) -> bytes:
    """The request's head as sent (`_with_user_agent`); a connector's requests all go to
    the same URL with the same headers."""
    return request_head(method, url, _with_user_agent(headers))


def outbound_transport(
    http_client: str, *, allow_hosts: Sequence[str] = ()
) -> AiohttpTransport | HttpTransport:
    """The transport `SMSRELAY_HTTP_CLIENT` names: `builtin` (the default) or `aiohttp`."""
    if http_client == "builtin":
        return HttpTransport(allow_hosts=allow_hosts)
    if http_client == "aiohttp":
        return AiohttpTransport(allow_hosts=allow_hosts)
    raise ValueError(
        f"SMSRELAY_HTTP_CLIENT: unknown HTTP client {http_client!r}; "
        f"expected one of {', '.join(HTTP_CLIENTS)}"
    )


# ---------------------------------------------------------------- in-memory transport

Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class InMemoryTransport:
    """Answers requests with a function instead of the network; keeps every request seen.

    The handler may return an `HttpResponse` (or an awaitable of one) or raise
    `TransportError` to simulate timeouts and refused connections.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    async def send(
        self, request: HttpRequest, *, timeout: float, before_write: BeforeWrite | None = None
    ) -> HttpResponse:
        """Record `request` (after `before_write`) and return the handler's answer."""
        if before_write is not None:
            await before_write()
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, HttpResponse)
        return answer

    async def aclose(self) -> None:
        """Nothing to release."""


__all__ = [
    "AiohttpTransport",
    "BeforeWrite",
    "HttpTransport",
    "InMemoryTransport",
    "Transport",
    "TransportError",
    "outbound_transport",
]
