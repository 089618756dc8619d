"""The outbound transport over real HTTP on 127.0.0.1, and its address guard (SPEC §8)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from smsrelay.app import outbound_allow_hosts
from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.address_guard import (
    BlockedAddressError,
    GuardedResolver,
    OutboundPolicy,
    address_block_reason,
    target_refusal,
)
from smsrelay.dispatch.http11 import ConnectionPool, request_head
from smsrelay.dispatch.transport import (
    AiohttpTransport,
    HttpTransport,
    InMemoryTransport,
    TransportError,
    outbound_transport,
)
from smsrelay.settings import Settings, load_settings

LOCAL = ("127.0.0.1", "localhost")

# Every test of the transport's contract runs against both HTTP clients.
Transports = type[AiohttpTransport] | type[HttpTransport]


@pytest.fixture(params=[HttpTransport, AiohttpTransport], ids=["builtin", "aiohttp"])
def transport_class(request: pytest.FixtureRequest) -> Transports:
    kind: Transports = request.param
    return kind


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


async def test_sends_request_and_returns_response(transport_class: Transports) -> None:
    async with local_server() as server, transport_class(allow_hosts=LOCAL) as transport:
        response = await transport.send(post(f"{server.url}/send?x=1"), timeout=5)
    assert response.status == 200
    assert b'"path": "/send"' in response.body
    assert server.bodies == [b'{"to": "+15550001"}']
    assert server.seen[0].headers["Authorization"] == "Bearer s3cret"
    assert server.seen[0].query_string == "x=1"


async def test_request_without_content_type_gets_none_added(transport_class: Transports) -> None:
    async with local_server() as server, transport_class(allow_hosts=LOCAL) as transport:
        request = HttpRequest("POST", f"{server.url}/raw", (), b"hello")
        await transport.send(request, timeout=5)
    assert "Content-Type" not in server.seen[0].headers


async def test_response_body_is_capped(transport_class: Transports) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 300_000)

    async with (
        local_server(big) as server,
        transport_class(allow_hosts=LOCAL, max_response_bytes=1000) as transport,
    ):
        response = await transport.send(post(server.url), timeout=5)
    assert response.status == 200
    assert response.body == b"x" * 1000


async def test_slow_answer_is_a_retryable_timeout(transport_class: Transports) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    async with local_server(slow) as server, transport_class(allow_hosts=LOCAL) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(server.url), timeout=0.2)
        release.set()
    assert caught.value.retryable
    assert caught.value.reason == "timeout"


async def test_connection_refused_is_retryable(transport_class: Transports) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nobody listens
    async with transport_class(allow_hosts=LOCAL) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://127.0.0.1:{port}/"), timeout=5)
    assert caught.value.retryable
    assert caught.value.reason == "connection_error"


async def test_redirects_are_followed_and_303_becomes_get(transport_class: Transports) -> None:
    async def hop(request: web.Request) -> web.StreamResponse:
        if request.path == "/start":
            raise web.HTTPSeeOther("/final")
        return web.json_response({"method": request.method})

    async with local_server(hop) as server, transport_class(allow_hosts=LOCAL) as transport:
        response = await transport.send(post(f"{server.url}/start"), timeout=5)
    assert response.status == 200
    assert response.body == b'{"method": "GET"}'
    assert [r.path for r in server.seen] == ["/start", "/final"]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_before_write_runs_once_before_the_request_leaves(
    method: str, transport_class: Transports
) -> None:
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

    async with local_server(stamp) as server, transport_class(allow_hosts=LOCAL) as transport:
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


async def test_redirect_loop_stops_after_five_hops(transport_class: Transports) -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/again")

    async with local_server(loop) as server, transport_class(allow_hosts=LOCAL) as transport:
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


async def test_loopback_refused_when_not_allow_listed_and_nothing_sent(
    transport_class: Transports,
) -> None:
    async with local_server() as server, transport_class(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(server.url), timeout=5)
    assert_blocked(caught.value, "127.0.0.1", "loopback")
    assert server.seen == []


async def test_name_resolving_to_loopback_is_refused_and_nothing_sent(
    transport_class: Transports,
) -> None:
    async with local_server() as server, transport_class(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://localhost:{server.port}/"), timeout=5)
    assert caught.value.reason.startswith("blocked_address: localhost -> ")
    assert "loopback" in caught.value.reason
    assert server.seen == []


async def test_public_looking_name_pointing_inside_is_refused(transport_class: Transports) -> None:
    async with (
        local_server() as server,
        transport_class(allow_hosts=(), resolver=FakeResolver("127.0.0.1")) as transport,
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
    host: str, address: str, why: str, transport_class: Transports
) -> None:
    async with transport_class(allow_hosts=("localhost",)) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"http://{host}:9/"), timeout=1)
    assert_blocked(caught.value, address, why)


async def test_non_canonical_numeric_host_is_refused(transport_class: Transports) -> None:
    async with transport_class(allow_hosts=()) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.send(post("http://2130706433:9/"), timeout=1)
    assert not caught.value.retryable


async def test_redirect_from_allowed_server_to_refused_target_sends_nothing_there(
    transport_class: Transports,
) -> None:
    async with local_server() as target:

        async def bounce(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"{target.url}/steal")

        # Only the name "localhost" is allow-listed; the redirect names 127.0.0.1 directly.
        async with (
            local_server(bounce) as origin,
            transport_class(allow_hosts=("localhost",)) as transport,
        ):
            with pytest.raises(TransportError) as caught:
                await transport.send(post(f"http://localhost:{origin.port}/send"), timeout=5)
    assert_blocked(caught.value, "127.0.0.1", "loopback")
    assert len(origin.seen) == 1
    assert target.seen == []


async def test_allow_listed_address_and_cidr_work(transport_class: Transports) -> None:
    async with local_server() as server:
        for allow in [("127.0.0.1",), ("127.0.0.0/8",), ("localhost",)]:
            host = "localhost" if allow == ("localhost",) else "127.0.0.1"
            async with transport_class(allow_hosts=allow) as transport:
                response = await transport.send(post(f"http://{host}:{server.port}/"), timeout=5)
            assert response.status == 200
    assert len(server.seen) == 3


async def test_cross_origin_redirect_drops_credentials(transport_class: Transports) -> None:
    async with local_server() as target:

        async def bounce(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"http://localhost:{target.port}/next")

        async with (
            local_server(bounce) as origin,
            transport_class(allow_hosts=LOCAL) as transport,
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


def test_an_entry_with_a_port_allows_that_port_alone() -> None:
    policy = OutboundPolicy(["127.0.0.1:8000", "sandbox.internal:9000", "[::1]:8000", "fe80::1"])
    ip = ipaddress.ip_address
    assert policy.refusal("127.0.0.1", ip("127.0.0.1"), 8000) is None
    assert policy.refusal("127.0.0.1", ip("127.0.0.1"), 6379) == "loopback"
    assert policy.refusal("127.0.0.1", ip("127.0.0.1")) == "loopback"  # no port: not this entry
    assert policy.refusal("x", ip("::ffff:127.0.0.1"), 8000) is None  # the same IPv4 address
    assert policy.refusal("::1", ip("::1"), 8000) is None
    assert policy.refusal("::1", ip("::1"), 8001) == "loopback"
    assert policy.host_allowed("Sandbox.Internal.", 9000)
    assert not policy.host_allowed("sandbox.internal", 9001)
    assert not policy.host_allowed("sandbox.internal")
    assert policy.refusal("x", ip("fe80::1"), 1) is None  # an IPv6 address without brackets
    refusal = target_refusal(URL("http://127.0.0.1:6379/"), policy)
    assert refusal is not None and refusal.reason.startswith("blocked_address: 127.0.0.1 is a")
    assert target_refusal(URL("http://127.0.0.1:8000/sandbox"), policy) is None


def test_the_embedded_sandbox_opens_its_own_port_not_the_whole_host() -> None:
    settings = Settings(host="127.0.0.1", port=8123, allow_hosts=("provider.test",))
    policy = OutboundPolicy(outbound_allow_hosts(settings))
    for url in ("http://127.0.0.1:8123/sandbox/api/messages", "http://localhost:8123/x"):
        assert target_refusal(URL(url), policy) is None
    assert policy.host_allowed("localhost", 8123) and not policy.host_allowed("localhost", 6379)
    refused = target_refusal(URL("http://127.0.0.1:6379/"), policy)
    assert refused is not None and "loopback" in refused.reason
    assert policy.host_allowed("provider.test", 443)
    without = OutboundPolicy(outbound_allow_hosts(replace(settings, sandbox=False)))
    assert target_refusal(URL("http://127.0.0.1:8123/sandbox"), without) is not None


async def test_a_name_allowed_for_one_port_resolves_only_for_it() -> None:
    resolver = GuardedResolver(OutboundPolicy(["localhost:8123"]))
    assert await resolver.resolve("localhost", 8123)
    with pytest.raises(BlockedAddressError):
        await resolver.resolve("localhost", 6379)
    await resolver.close()


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


# ---------------------------------------------------------------- TLS


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` and 127.0.0.1, signed by itself, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@asynccontextmanager
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[int]]]:
    """An HTTPS server on 127.0.0.1 answering `{"ok": true}`: (port, its certificate,
    connections accepted)."""
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await reader.readexactly(length)
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, cert_path, accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_an_untrusted_certificate_is_a_tls_error_not_retried(
    transport_class: Transports, tmp_path: Path
) -> None:
    async with (
        tls_server(tmp_path) as (port, _cert, _accepted),
        transport_class(allow_hosts=LOCAL) as transport,
    ):
        with pytest.raises(TransportError) as caught:
            await transport.send(post(f"https://localhost:{port}/send"), timeout=5)
    assert caught.value.reason == "tls_error"
    assert not caught.value.retryable
    assert "certificate" in str(caught.value).lower()


async def test_the_builtin_client_speaks_tls_and_keeps_the_connection(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as (port, cert, accepted):
        trusted = ssl.create_default_context(cafile=str(cert))
        pool = ConnectionPool(GuardedResolver(OutboundPolicy(LOCAL)), ssl_context=trusted)
        url = URL(f"https://localhost:{port}/send")
        head = request_head("POST", url, (("Content-Type", "application/json"),))
        try:
            answers = [await pool.request("POST", url, head, b"{}", cap=1000) for _ in range(3)]
        finally:
            await pool.close()
    assert [(a.status, a.body) for a in answers] == [(200, b'{"ok": true}')] * 3
    assert len(accepted) == 1


def test_the_http_client_setting_picks_the_transport_and_refuses_others() -> None:
    assert load_settings({}).http_client == "builtin"
    assert isinstance(outbound_transport(load_settings({}).http_client), HttpTransport)
    chosen = load_settings({"SMSRELAY_HTTP_CLIENT": "aiohttp"}).http_client
    assert isinstance(outbound_transport(chosen), AiohttpTransport)
    with pytest.raises(ValueError, match=r"SMSRELAY_HTTP_CLIENT: .*'curl'.*builtin, aiohttp"):
        load_settings({"SMSRELAY_HTTP_CLIENT": "curl"})
    with pytest.raises(ValueError, match="SMSRELAY_HTTP_CLIENT"):
        outbound_transport("curl")


def test_the_transports_work_on_uvloop(transport_class: Transports, tmp_path: Path) -> None:
    """`smsrelay serve` runs on uvloop where it is installed (uvicorn's default), whose
    transports are not subclasses of asyncio's."""
    uvloop = pytest.importorskip("uvloop")

    async def exchanges() -> tuple[list[int], str, int]:
        async with local_server() as server, transport_class(allow_hosts=LOCAL) as transport:
            statuses = [
                (await transport.send(post(f"{server.url}/send"), timeout=5)).status
                for _ in range(3)
            ]
            async with tls_server(tmp_path) as (port, cert, accepted):
                with pytest.raises(TransportError) as caught:
                    await transport.send(post(f"https://localhost:{port}/send"), timeout=5)
                trusted = ssl.create_default_context(cafile=str(cert))
                pool = ConnectionPool(GuardedResolver(OutboundPolicy(LOCAL)), ssl_context=trusted)
                url = URL(f"https://localhost:{port}/send")
                try:
                    for _ in range(2):
                        head = request_head("POST", url, ())
                        assert (await pool.request("POST", url, head, b"{}", cap=100)).status == 200
                finally:
                    await pool.close()
            return statuses, caught.value.reason, len(accepted)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        statuses, refused, connections = runner.run(exchanges())
    assert statuses == [200, 200, 200]
    assert refused == "tls_error"
    assert connections == 1  # one kept for both requests (the refused handshake never got in)
