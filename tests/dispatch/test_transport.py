"""The outbound transport over real HTTP on 127.0.0.1, and its address guard (SPEC §8)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.address_guard import OutboundPolicy, address_block_reason
from smsrelay.dispatch.transport import AiohttpTransport, InMemoryTransport, TransportError

LOCAL = ("127.0.0.1", "localhost")


@dataclass
class LocalServer:
    url: str
    port: int
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def local_server(handler: RouteHandler | None = None) -> AsyncIterator[LocalServer]:
    """A tiny HTTP server on 127.0.0.1 that records every request it receives."""

    async def default(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "path": request.path})

    server = LocalServer(url="", port=0)
    answer = handler or default

    async def record(request: web.Request) -> web.StreamResponse:
        server.seen.append(request)
        server.bodies.append(await request.read())
        return await answer(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    server.port = sock.getsockname()[1]
    server.url = f"http://127.0.0.1:{server.port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def post(url: str, body: bytes = b'{"to": "+15550001"}') -> HttpRequest:
    return HttpRequest(
        method="POST",
        url=url,
        headers=(("Content-Type", "application/json"), ("Authorization", "Bearer s3cret")),
        body=body,
    )


class FakeResolver(AbstractResolver):
    """Resolves every name to one fixed address (for names that point inside)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": fam,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------- plain sending


async def test_sends_request_and_returns_response() -> None:
    async with local_server() as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        response = await transport.send(post(f"{server.url}/send?x=1"), timeout=5)
    assert response.status == 200
    assert b'"path": "/send"' in response.body
    assert server.bodies == [b'{"to": "+15550001"}']
    assert server.seen[0].headers["Authorization"] == "Bearer s3cret"
    assert server.seen[0].query_string == "x=1"


async def test_request_without_content_type_gets_none_added() -> None:
    async with local_server() as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        request = HttpRequest("POST", f"{server.url}/raw", (), b"hello")
        await transport.send(request, timeout=5)
    assert "Content-Type" not in server.seen[0].headers


async def test_response_body_is_capped() -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 300_000)

    async with (
        local_server(big) as server,
        AiohttpTransport(allow_hosts=LOCAL, max_response_bytes=1000) as transport,
    ):
        response = await transport.send(post(server.url), timeout=5)
    assert response.status == 200
    assert response.body == b"x" * 1000


async def test_slow_answer_is_a_retryable_timeout() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    async with local_server(slow) as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(server.url), timeout=0.2)
        release.set()
    assert caught.value.retryable
    assert caught.value.reason == "timeout"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nobody listens
    async with AiohttpTransport(allow_hosts=LOCAL) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://127.0.0.1:{port}/"), timeout=5)
    assert caught.value.retryable
    assert caught.value.reason == "connection_error"


async def test_redirects_are_followed_and_303_becomes_get() -> None:
    async def hop(request: web.Request) -> web.StreamResponse:
        if request.path == "/start":
            raise web.HTTPSeeOther("/final")
        return web.json_response({"method": request.method})

    async with local_server(hop) as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        response = await transport.send(post(f"{server.url}/start"), timeout=5)
    assert response.status == 200
    assert response.body == b'{"method": "GET"}'
    assert [r.path for r in server.seen] == ["/start", "/final"]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_before_write_runs_once_before_the_request_leaves(method: str) -> None:
    arrived: list[float] = []
    hook_done: list[float] = []

    async def stamp(request: web.Request) -> web.StreamResponse:
        arrived.append(time.monotonic())
        if request.path == "/start":
            raise web.HTTPTemporaryRedirect("/final")  # same method, same body
        return web.json_response({"method": request.method})

    async def before_write() -> None:
        await asyncio.sleep(0.2)
        hook_done.append(time.monotonic())

    async with local_server(stamp) as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        url = f"{server.url}/start"
        request = post(url) if method == "POST" else HttpRequest("GET", url, (), b"")
        response = await transport.send(request, timeout=5, before_write=before_write)
        # The same transport still sends requests without a hook.
        plain = await transport.send(post(f"{server.url}/plain"), timeout=5)
    assert response.body == f'{{"method": "{method}"}}'.encode()
    assert plain.status == 200
    # Once, though the request went out twice (redirected), and nothing left before it.
    assert len(hook_done) == 1
    assert len(arrived) == 3
    assert arrived[0] >= hook_done[0]
    if method == "POST":
        assert server.bodies[:2] == [b'{"to": "+15550001"}'] * 2


async def test_redirect_loop_stops_after_five_hops() -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/again")

    async with local_server(loop) as server, AiohttpTransport(allow_hosts=LOCAL) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(server.url), timeout=5)
    assert caught.value.reason == "too_many_redirects"
    assert not caught.value.retryable
    assert len(server.seen) == 6


# ---------------------------------------------------------------- address guard


def assert_blocked(error: TransportError, address: str, why: str) -> None:
    assert not error.retryable
    assert error.reason.startswith("blocked_address: ")
    assert address in error.reason
    assert why in error.reason
    assert "SMSRELAY_ALLOW_HOSTS" in error.reason


async def test_loopback_refused_when_not_allow_listed_and_nothing_sent() -> None:
    async with local_server() as server, AiohttpTransport(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(server.url), timeout=5)
    assert_blocked(caught.value, "127.0.0.1", "loopback")
    assert server.seen == []


async def test_name_resolving_to_loopback_is_refused_and_nothing_sent() -> None:
    async with local_server() as server, AiohttpTransport(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://localhost:{server.port}/"), timeout=5)
    assert caught.value.reason.startswith("blocked_address: localhost -> ")
    assert "loopback" in caught.value.reason
    assert server.seen == []


async def test_public_looking_name_pointing_inside_is_refused() -> None:
    async with (
        local_server() as server,
        AiohttpTransport(allow_hosts=(), resolver=FakeResolver("127.0.0.1")) as transport,
    ):
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://sms.example.com:{server.port}/"), timeout=5)
    assert_blocked(caught.value, "sms.example.com -> 127.0.0.1", "loopback")
    assert server.seen == []


@pytest.mark.parametrize(
    ("host", "address", "why"),
    [
        ("[::1]", "::1", "loopback"),
        ("[::ffff:127.0.0.1]", "127.0.0.1", "loopback"),
        ("10.0.0.1", "10.0.0.1", "private"),
        ("192.168.1.20", "192.168.1.20", "private"),
        ("169.254.169.254", "169.254.169.254", "cloud metadata"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("224.0.0.1", "224.0.0.1", "multicast"),
        ("[fe80::1]", "fe80::1", "link-local"),
        ("100.64.0.1", "100.64.0.1", "not publicly routable"),
    ],
)
async def test_internal_ip_literals_are_refused_before_connecting(
    host: str, address: str, why: str
) -> None:
    async with AiohttpTransport(allow_hosts=("localhost",)) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://{host}:9/"), timeout=1)
    assert_blocked(caught.value, address, why)


async def test_non_canonical_numeric_host_is_refused() -> None:
    async with AiohttpTransport(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post("http://2130706433:9/"), timeout=1)
    assert not caught.value.retryable


async def test_redirect_from_allowed_server_to_refused_target_sends_nothing_there() -> None:
    async with local_server() as target:

        async def bounce(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"{target.url}/steal")

        # Only the name "localhost" is allow-listed; the redirect names 127.0.0.1 directly.
        async with (
            local_server(bounce) as origin,
            AiohttpTransport(allow_hosts=("localhost",)) as transport,
        ):
            with pytest.raises(TransportError) as caught:
                await transport.send(post(f"http://localhost:{origin.port}/send"), timeout=5)
    assert_blocked(caught.value, "127.0.0.1", "loopback")
    assert len(origin.seen) == 1
    assert target.seen == []


async def test_allow_listed_address_and_cidr_work() -> None:
    async with local_server() as server:
        for allow in [("127.0.0.1",), ("127.0.0.0/8",), ("localhost",)]:
            host = "localhost" if allow == ("localhost",) else "127.0.0.1"
            async with AiohttpTransport(allow_hosts=allow) as transport:
                response = await transport.send(post(f"http://{host}:{server.port}/"), timeout=5)
            assert response.status == 200
    assert len(server.seen) == 3


async def test_cross_origin_redirect_drops_credentials() -> None:
    async with local_server() as target:

        async def bounce(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"http://localhost:{target.port}/next")

        async with (
            local_server(bounce) as origin,
            AiohttpTransport(allow_hosts=LOCAL) as transport,
        ):
            response = await transport.send(post(f"{origin.url}/send"), timeout=5)
    assert response.status == 200
    assert "Authorization" not in target.seen[0].headers
    assert target.bodies == [b'{"to": "+15550001"}']  # 307 keeps method and body
    assert origin.seen[0].headers["Authorization"] == "Bearer s3cret"


def test_policy_allows_by_name_or_network_only() -> None:
    policy = OutboundPolicy(["sandbox.internal", "10.1.0.0/16", "::1", "LocalHost."])
    ip = ipaddress.ip_address
    assert policy.refusal("sandbox.internal", ip("10.9.9.9")) is None
    assert policy.refusal("other", ip("10.1.2.3")) is None
    assert policy.refusal("other", ip("10.2.0.1")) == "private"
    assert policy.refusal("localhost", ip("127.0.0.1")) is None
    assert policy.refusal("x", ip("::1")) is None
    assert policy.refusal("x", ip("8.8.8.8")) is None


def test_embedded_ipv4_addresses_are_unwrapped() -> None:
    for text in ["::ffff:10.0.0.1", "2002:0a00:0001::1", "64:ff9b::a00:1"]:
        assert address_block_reason(ipaddress.ip_address(text)) == "private", text
    assert address_block_reason(ipaddress.ip_address("2606:4700::1111")) is None


async def test_in_memory_transport_records_and_answers() -> None:
    transport = InMemoryTransport(lambda r: HttpResponse(202, {"X": "1"}, r.body))
    response = await transport.send(post("https://sms.example.com/"), timeout=1)
    assert response.status == 202
    assert response.body == b'{"to": "+15550001"}'
    assert [r.url for r in transport.requests] == ["https://sms.example.com/"]
