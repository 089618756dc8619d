"""The HTTP/1.1 client's connection pool against raw TCP servers on 127.0.0.1.

Each server here is written with `asyncio.start_server`, so a test decides the exact bytes
of every answer, when they go out and when the connection closes, and counts the
connections the pool opens.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from smsrelay.connectors.exchange import HttpRequest, HttpResponse
from smsrelay.dispatch.http11 import (
    KEEPALIVE_SECONDS,
    ConnectionPool,
    HttpProtocolError,
    ServerDisconnected,
    request_head,
)
from smsrelay.dispatch.transport import HttpTransport

LOOPBACK = "127.0.0.1"
CAP = 1024 * 1024
# The longest any test waits for something that should happen at once.
PATIENCE = 1.0


# ---------------------------------------------------------------- the raw server


@dataclass
class Received:
    """One request as the server read it: the head (up to the blank line) and the body."""

    connection: int
    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.decode("latin-1").split("\r\n", 1)[0]

    @property
    def path(self) -> str:
        return self.request_line.split(" ")[1]

    @property
    def headers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.lower() not in found, f"header {name} sent twice"
                found[name.lower()] = value.strip()
        return found


@dataclass
class Peer:
    """The server's side of one accepted connection."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # Set once the client closed the connection (the server read EOF or was reset).
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_closes(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        with suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.client_closed.set()


# Answers one request; returns whether the server keeps reading on the connection.
Handler = Callable[[Peer, Received], Awaitable[bool]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    peers: list[Peer] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/") -> URL:
        return URL(f"http://{LOOPBACK}:{self.port}{path}")

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of the test's own, so that the end of the test can cancel it.
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        self.tasks.add(asyncio.get_running_loop().create_task(self.serve(peer)))

    async def serve(self, peer: Peer) -> None:
        try:
            while True:
                request = await read_request(peer)
                if request is None:
                    peer.client_closed.set()
                    return
                self.requests.append(request)
                if not await self.handler(peer, request):
                    return
        except ConnectionError:
            peer.client_closed.set()
        finally:
            peer.writer.close()


async def read_request(peer: Peer) -> Received | None:
    """The next request on the connection; None once the client has closed it."""
    try:
        head = await peer.reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    received = Received(peer.index, head, b"")
    length = received.headers.get("content-length")
    if length is not None:
        received.body = await peer.reader.readexactly(int(length))
    return received


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    """A raw HTTP/1.1 server on 127.0.0.1 answering with `handler`."""
    server = RawServer(handler)
    listener = await asyncio.start_server(server.accept, LOOPBACK, 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for peer in server.peers:
            peer.writer.transport.abort()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await listener.wait_closed()


def answer(
    body: bytes = b"ok",
    *,
    status: str = "200 OK",
    headers: Sequence[str] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """A whole answer framed by Content-Length."""
    lines = [f"{version} {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def echo_path(peer: Peer, request: Received) -> bool:
    """Answers every request with its path, keeping the connection open."""
    await peer.send(answer(f"path={request.path}".encode()))
    return True


async def eventually(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), PATIENCE)


async def eventually_true(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(PATIENCE):
        while not condition():
            await asyncio.sleep(0.001)


# ---------------------------------------------------------------- the client side


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1 and records the names asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append((host, port))
        return [
            {
                "hostname": host,
                "host": LOOPBACK,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


class FakeClock:
    """The pool's clock: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def open_pool(
    *,
    resolver: AbstractResolver | None = None,
    limit: int = 256,
    keepalive: float = KEEPALIVE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(
        resolver or LoopbackResolver(), limit=limit, keepalive=keepalive, clock=clock
    )
    try:
        yield pool
    finally:
        await pool.close()


async def fetch(
    pool: ConnectionPool,
    url: URL,
    method: str = "GET",
    body: bytes | None = None,
    *,
    headers: Sequence[tuple[str, str]] = (),
    cap: int = CAP,
    before_write: Callable[[], Awaitable[None]] | None = None,
) -> HttpResponse:
    head = request_head(method, url, headers)
    # A request that never ends fails the test rather than hanging it.
    async with asyncio.timeout(PATIENCE):
        return await pool.request(method, url, head, body, cap=cap, before_write=before_write)


# ---------------------------------------------------------------- keep-alive


async def test_sequential_requests_share_one_connection_and_are_well_formed() -> None:
    sent: list[tuple[str, bytes | None]] = [
        ("POST", b'{"to": "+15550001"}'),
        ("GET", None),
        ("POST", b""),
        ("PUT", b"second body"),
        ("DELETE", None),
    ]
    async with raw_server(echo_path) as server, open_pool() as pool:
        answers = []
        for number, (method, body) in enumerate(sent):
            url = server.url(f"/send/{number}?x=a%20b")
            headers = [("Content-Type", "application/json")]
            answers.append(await fetch(pool, url, method, body, headers=headers))
    assert len(server.peers) == 1
    assert [a.status for a in answers] == [200] * 5
    assert [a.body for a in answers] == [f"path=/send/{n}?x=a%20b".encode() for n in range(5)]
    assert [r.request_line for r in server.requests] == [
        f"{method} /send/{n}?x=a%20b HTTP/1.1" for n, (method, _) in enumerate(sent)
    ]
    first = server.requests[0]
    assert first.headers == {
        "host": f"127.0.0.1:{server.port}",
        "accept": "*/*",
        "accept-encoding": "gzip, deflate",
        "content-type": "application/json",
        "content-length": "19",
    }
    assert first.body == b'{"to": "+15550001"}'
    lengths = [r.headers.get("content-length") for r in server.requests]
    assert lengths == ["19", None, "0", "11", None]
    assert [r.body for r in server.requests] == [
        b'{"to": "+15550001"}',
        b"",
        b"",
        b"second body",
        b"",
    ]


@pytest.mark.parametrize(
    ("version", "headers", "reused"),
    [
        ("HTTP/1.1", (), True),
        ("HTTP/1.1", ("Connection: close",), False),
        ("HTTP/1.1", ("Connection: Close",), False),
        ("HTTP/1.0", (), False),
        ("HTTP/1.0", ("Connection: keep-alive",), True),
    ],
)
async def test_connection_is_reused_only_when_the_answer_allows_it(
    version: str, headers: tuple[str, ...], reused: bool
) -> None:
    async def reply(peer: Peer, request: Received) -> bool:
        await peer.send(answer(b"ok", version=version, headers=headers))
        return True  # the server would go on: closing is the client's decision

    async with raw_server(reply) as server, open_pool() as pool:
        first = await fetch(pool, server.url("/one"))
        if not reused:
            # The pool closes a connection it will not use again.
            await eventually(server.peers[0].client_closed)
        second = await fetch(pool, server.url("/two"))
    assert (first.status, first.body, second.status, second.body) == (200, b"ok", 200, b"ok")
    assert [r.connection for r in server.requests] == ([0, 0] if reused else [0, 1])


@pytest.mark.parametrize("how", ["close", "half-close"])
async def test_idle_connection_closed_by_the_server_is_replaced(how: str) -> None:
    close_idle = asyncio.Event()

    async def reply_then_close_when_told(peer: Peer, request: Received) -> bool:
        await peer.send(answer(b"ok"))
        if peer.index > 0:
            return True
        await close_idle.wait()
        if how == "close":
            return False  # the server closes the connection
        peer.writer.write_eof()  # the client's close, in answer, is seen here
        await peer.until_client_closes()
        return False

    async with raw_server(reply_then_close_when_told) as server, open_pool() as pool:
        await fetch(pool, server.url("/one"))
        close_idle.set()
        if how == "close":
            await asyncio.sleep(0.05)  # the FIN reaches the client in a loop turn or two
        else:
            await eventually(server.peers[0].client_closed)
        second = await fetch(pool, server.url("/two"))
    assert (second.status, second.body) == (200, b"ok")
    assert [r.connection for r in server.requests] == [0, 1]


async def test_idle_connection_older_than_keepalive_is_closed_not_reused() -> None:
    clock = FakeClock()
    async with raw_server(echo_path) as server, open_pool(keepalive=10, clock=clock) as pool:
        await fetch(pool, server.url("/a"))
        clock.now += 9.5
        await fetch(pool, server.url("/b"))  # idle 9.5 s: still kept
        clock.now += 10.5
        third = await fetch(pool, server.url("/c"))  # idle 10.5 s: too old
        await eventually(server.peers[0].client_closed)
    assert third.body == b"path=/c"
    assert [r.connection for r in server.requests] == [0, 0, 1]


async def test_pruning_closes_expired_idle_connections_and_keeps_the_others() -> None:
    clock = FakeClock()
    async with (
        raw_server(echo_path) as old,
        raw_server(echo_path) as recent,
        open_pool(keepalive=0.05, clock=clock) as pool,
    ):
        await fetch(pool, old.url("/"))
        clock.now += 100
        await fetch(pool, recent.url("/"))
        clock.now += 0.01  # `old` has been idle for 100 s, `recent` for 0.01 s
        # The pruning timer runs after `keepalive` seconds of the loop's own time.
        await eventually(old.peers[0].client_closed)
        assert not recent.peers[0].client_closed.is_set()
        again = await fetch(pool, recent.url("/again"))
    assert again.body == b"path=/again"
    assert len(recent.peers) == 1


# ---------------------------------------------------------------- failures


async def test_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    async def hang_or_answer(peer: Peer, request: Received) -> bool:
        if request.path == "/hang":
            await peer.until_client_closes()
            return False
        return await echo_path(peer, request)

    async with raw_server(hang_or_answer) as server, open_pool(limit=1) as pool:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch(pool, server.url("/hang")), 0.1)
        await eventually(server.peers[0].client_closed)
        # With limit=1, a slot kept by the cancelled request would make this one wait.
        later = await asyncio.wait_for(fetch(pool, server.url("/ok")), PATIENCE)
    assert (later.status, later.body) == (200, b"path=/ok")
    assert [r.connection for r in server.requests] == [0, 1]


async def test_server_closing_without_answering_raises_server_disconnected() -> None:
    async def close_at_once(peer: Peer, request: Received) -> bool:
        return False

    async with raw_server(close_at_once) as server, open_pool() as pool:
        with pytest.raises(ServerDisconnected) as caught:
            await fetch(pool, server.url("/"))
    assert isinstance(caught.value, HttpProtocolError)
    assert "without answering" in str(caught.value)
    assert len(server.requests) == 1


async def test_server_closing_in_the_middle_of_an_answer_raises_server_disconnected() -> None:
    async def cut_short(peer: Peer, request: Received) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        return False

    async with raw_server(cut_short) as server, open_pool() as pool:
        with pytest.raises(ServerDisconnected, match="middle"):
            await fetch(pool, server.url("/"))


@pytest.mark.parametrize(
    "head",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nine\r\n\r\n",
        # Digits are ASCII digits (RFC 9112: 1*DIGIT), whatever str.isdigit says.
        b"HTTP/1.1 \xb200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n",
        "HTTP/1.1 ²00 OK\r\n\r\n".encode(),
        "HTTP/1.1 200 OK\r\nContent-Length: ¹\r\n\r\nx".encode(),
        "HTTP/1.1 ٢٠٠ OK\r\nContent-Length: 2\r\n\r\nab".encode(),
        "HTTP/1.1 200 OK\r\nContent-Length: ١٠\r\n\r\n0123456789".encode(),
    ],
    ids=[
        "not-http",
        "no-code",
        "http2",
        "long-code",
        "bad-header",
        "bad-length",
        "latin1-superscript-code",
        "latin1-superscript-length",
        "utf8-superscript-code",
        "utf8-superscript-length",
        "arabic-indic-code",
        "arabic-indic-length",
    ],
)
async def test_malformed_answer_raises_http_protocol_error_and_drops_the_connection(
    head: bytes,
) -> None:
    async def malformed(peer: Peer, request: Received) -> bool:
        await peer.send(head)
        await peer.until_client_closes()  # the server itself never closes
        return False

    async with raw_server(malformed) as server, open_pool() as pool:
        with pytest.raises(HttpProtocolError) as caught:
            await fetch(pool, server.url("/"))
        await eventually(server.peers[0].client_closed)
    # The answer was malformed; the server did not disconnect.
    assert type(caught.value) is HttpProtocolError, repr(caught.value)


async def test_bytes_after_a_complete_answer_close_the_connection_via_the_transport() -> None:
    pipelined = answer(b"first") + answer(b"unasked")

    async def too_much(peer: Peer, request: Received) -> bool:
        await peer.send(pipelined if peer.index == 0 else answer(b"second"))
        return True

    async with (
        raw_server(too_much) as server,
        HttpTransport(allow_hosts=(LOOPBACK,)) as transport,
    ):
        first = await transport.send(HttpRequest("GET", str(server.url("/1")), (), b""), timeout=2)
        await eventually(server.peers[0].client_closed)
        second = await transport.send(HttpRequest("GET", str(server.url("/2")), (), b""), timeout=2)
    assert (first.status, first.body) == (200, b"first")
    assert (second.status, second.body) == (200, b"second")
    assert [r.connection for r in server.requests] == [0, 1]


async def test_bytes_arriving_on_an_idle_connection_close_it_via_the_transport() -> None:
    send_unasked = asyncio.Event()

    async def answer_then_more(peer: Peer, request: Received) -> bool:
        await peer.send(answer(b"ok"))
        if peer.index == 0:
            await send_unasked.wait()
            await peer.send(answer(b"unasked"))
        return True

    async with (
        raw_server(answer_then_more) as server,
        HttpTransport(allow_hosts=(LOOPBACK,)) as transport,
    ):
        await transport.send(HttpRequest("GET", str(server.url("/1")), (), b""), timeout=2)
        send_unasked.set()
        await eventually(server.peers[0].client_closed)
        second = await transport.send(HttpRequest("GET", str(server.url("/2")), (), b""), timeout=2)
    assert (second.status, second.body) == (200, b"ok")
    assert [r.connection for r in server.requests] == [0, 1]


async def test_refused_port_raises_os_error_naming_host_and_port() -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]  # closed again before the request: nobody listens
    async with open_pool(limit=1) as pool:
        with pytest.raises(OSError) as caught:
            await fetch(pool, URL(f"http://{LOOPBACK}:{port}/"))
        # The failed attempt gave its slot back: with limit=1 this one would wait forever.
        with pytest.raises(OSError):
            await fetch(pool, URL(f"http://{LOOPBACK}:{port}/"))
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.errno == errno.ECONNREFUSED


# ---------------------------------------------------------------- concurrency


async def test_limit_caps_the_requests_in_flight() -> None:
    release = asyncio.Event()
    two_in_flight = asyncio.Event()
    in_flight = 0
    most_in_flight = 0

    async def hold(peer: Peer, request: Received) -> bool:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        if in_flight == 2:
            two_in_flight.set()
        await release.wait()
        in_flight -= 1
        return await echo_path(peer, request)

    async with raw_server(hold) as server, open_pool(limit=2) as pool:
        tasks = [asyncio.create_task(fetch(pool, server.url(f"/{n}"))) for n in range(5)]
        await eventually(two_in_flight)
        await asyncio.sleep(0.05)  # time enough for a third request to arrive, were it sent
        assert len(server.requests) == 2
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(*tasks), PATIENCE)
    assert sorted(a.body for a in answers) == [f"path=/{n}".encode() for n in range(5)]
    assert most_in_flight == 2
    assert len(server.peers) == 2  # the freed connections were reused


# ---------------------------------------------------------------- bodies


def chunked(*pieces: bytes, trailers: bytes = b"") -> list[bytes]:
    """A chunked body as the writes that send it."""
    writes = [b"%x;name=value\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return [*writes, b"0\r\n" + trailers + b"\r\n"]


@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip"])
async def test_body_over_the_cap_is_cut_and_the_connection_dropped(framing: str) -> None:
    async def big(peer: Peer, request: Received) -> bool:
        if peer.index > 0:
            await peer.send(answer(b"small"))
        elif framing == "content-length":
            await peer.send(answer(b"x" * 1000))
        elif framing == "chunked":
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await peer.send(b"".join(chunked(b"x" * 600, b"x" * 400)))
        else:
            await peer.send(answer(gzip.compress(b"x" * 1000), headers=["Content-Encoding: gzip"]))
        return True

    async with raw_server(big) as server, open_pool() as pool:
        cut = await fetch(pool, server.url("/big"), cap=100)
        await eventually(server.peers[0].client_closed)
        after = await fetch(pool, server.url("/small"), cap=100)
    assert (cut.status, cut.body) == (200, b"x" * 100)
    assert after.body == b"small"
    assert [r.connection for r in server.requests] == [0, 1]


async def test_chunked_answer_in_pieces_is_joined_and_the_connection_reused() -> None:
    async def in_pieces(peer: Peer, request: Received) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for write in chunked(b"hello", b", ", b"chunked world", trailers=b"X-Sum: 1\r\n"):
            await asyncio.sleep(0.005)  # separate writes, read as separate pieces
            await peer.send(write)
        return True

    async with raw_server(in_pieces) as server, open_pool() as pool:
        first = await fetch(pool, server.url("/1"))
        second = await fetch(pool, server.url("/2"))
    assert first.body == second.body == b"hello, chunked world"
    assert first.headers == {"Transfer-Encoding": "chunked"}
    assert [r.connection for r in server.requests] == [0, 0]


TEXT = b'{"status": "queued", "id": "m-1"}' * 20


@pytest.mark.parametrize(
    ("coding", "encoded", "framing"),
    [
        ("gzip", gzip.compress(TEXT), "content-length"),
        ("gzip", gzip.compress(TEXT), "chunked"),
        ("deflate", zlib.compress(TEXT), "content-length"),
        ("deflate", zlib.compress(TEXT)[2:-4], "chunked"),  # raw deflate, as some send
    ],
    ids=["gzip", "gzip-chunked", "deflate", "raw-deflate-chunked"],
)
async def test_compressed_answer_is_decoded(coding: str, encoded: bytes, framing: str) -> None:
    async def compressed(peer: Peer, request: Received) -> bool:
        if framing == "content-length":
            await peer.send(answer(encoded, headers=[f"Content-Encoding: {coding}"]))
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\n\r\n"
            half = len(encoded) // 2
            await peer.send(head.encode() + b"".join(chunked(encoded[:half], encoded[half:])))
        return True

    async with raw_server(compressed) as server, open_pool() as pool:
        first = await fetch(pool, server.url("/1"))
        second = await fetch(pool, server.url("/2"))
    assert first.body == second.body == TEXT
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"
    assert [r.connection for r in server.requests] == [0, 0]


async def test_answer_without_length_is_read_to_the_end_of_the_connection() -> None:
    async def until_close(peer: Peer, request: Received) -> bool:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.01)
        await peer.send(b"part two")
        return False  # the end of the connection ends the body

    async with raw_server(until_close) as server, open_pool() as pool:
        first = await fetch(pool, server.url("/1"))
        second = await fetch(pool, server.url("/2"))
    assert first.body == second.body == b"part one, part two"
    assert [r.connection for r in server.requests] == [0, 1]


async def test_answers_without_a_body_keep_the_connection_in_step() -> None:
    async def bodiless(peer: Peer, request: Received) -> bool:
        if request.request_line.startswith("HEAD"):
            # The length of the body a GET would get; no body follows.
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        elif request.path == "/204":
            await peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            await echo_path(peer, request)
        return True

    async with raw_server(bodiless) as server, open_pool() as pool:
        head = await fetch(pool, server.url("/head"), "HEAD")
        empty = await fetch(pool, server.url("/204"))
        last = await fetch(pool, server.url("/last"))
    assert (head.status, head.body, head.headers) == (200, b"", {"Content-Length": "1234"})
    assert (empty.status, empty.body) == (204, b"")
    assert last.body == b"path=/last"
    assert [r.connection for r in server.requests] == [0, 0, 0]


async def test_interim_answers_are_skipped() -> None:
    async def continue_first(peer: Peer, request: Received) -> bool:
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0.01)
        await peer.send(b"HTTP/1.1 102 Processing\r\nX-Step: 1\r\n\r\n" + answer(b"final"))
        return True

    async with raw_server(continue_first) as server, open_pool() as pool:
        response = await fetch(pool, server.url("/"), "POST", b"body")
        again = await fetch(pool, server.url("/"), "POST", b"body")
    assert (response.status, response.body) == (200, b"final")
    assert "X-Step" not in response.headers
    assert again.body == b"final"
    assert len(server.peers) == 1


# ---------------------------------------------------------------- before_write


async def test_before_write_is_awaited_before_any_request_byte_arrives() -> None:
    events: list[str] = []

    async def record(peer: Peer, request: Received) -> bool:
        events.append(f"server read {request.path}")
        return await echo_path(peer, request)

    def hook(name: str) -> Callable[[], Awaitable[None]]:
        async def before_write() -> None:
            events.append(f"hook {name} starts")
            await asyncio.sleep(0.05)  # time enough for written bytes to be read
            events.append(f"hook {name} ends")

        return before_write

    async with raw_server(record) as server, open_pool() as pool:
        # A new connection, then the same connection again.
        first = await fetch(pool, server.url("/1"), "POST", b"one", before_write=hook("1"))
        second = await fetch(pool, server.url("/2"), "POST", b"two", before_write=hook("2"))
    assert (first.body, second.body) == (b"path=/1", b"path=/2")
    assert events == [
        "hook 1 starts",
        "hook 1 ends",
        "server read /1",
        "hook 2 starts",
        "hook 2 ends",
        "server read /2",
    ]
    assert [r.connection for r in server.requests] == [0, 0]


async def test_connection_closed_by_the_server_during_before_write_is_replaced() -> None:
    close_idle = asyncio.Event()

    async def reply_then_close_when_told(peer: Peer, request: Received) -> bool:
        await peer.send(answer(f"connection {peer.index}".encode()))
        if peer.index == 0:
            await close_idle.wait()
            peer.writer.write_eof()
            await peer.until_client_closes()
            return False
        return True

    async with raw_server(reply_then_close_when_told) as server, open_pool() as pool:

        async def server_closes_meanwhile() -> None:
            close_idle.set()
            # The client has seen the end of the connection once it closes its side.
            await eventually(server.peers[0].client_closed)

        await fetch(pool, server.url("/1"))
        second = await fetch(
            pool, server.url("/2"), "POST", b"x", before_write=server_closes_meanwhile
        )
    assert (second.status, second.body) == (200, b"connection 1")
    assert [(r.connection, r.path, r.body) for r in server.requests] == [
        (0, "/1", b""),
        (1, "/2", b"x"),
    ]


# ---------------------------------------------------------------- closing, names


async def test_close_closes_idle_connections_and_refuses_later_requests() -> None:
    async with raw_server(echo_path) as server, open_pool() as pool:
        await fetch(pool, server.url("/"))
        await pool.close()
        await eventually(server.peers[0].client_closed)
        with pytest.raises(RuntimeError, match="closed"):
            await fetch(pool, server.url("/"))
    assert len(server.peers) == 1
    assert len(server.requests) == 1


async def test_close_fails_a_request_in_flight() -> None:
    arrived = asyncio.Event()

    async def never_answer(peer: Peer, request: Received) -> bool:
        arrived.set()
        await peer.until_client_closes()
        return False

    async with raw_server(never_answer) as server, open_pool() as pool:
        pending = asyncio.create_task(fetch(pool, server.url("/")))
        await eventually(arrived)
        await pool.close()
        with pytest.raises(ConnectionAbortedError, match="pool was closed"):
            await asyncio.wait_for(pending, PATIENCE)
        await eventually(server.peers[0].client_closed)


async def test_close_refuses_a_request_still_waiting_for_a_slot() -> None:
    arrived = asyncio.Event()

    async def never_answer(peer: Peer, request: Received) -> bool:
        arrived.set()
        await peer.until_client_closes()
        return False

    async with raw_server(never_answer) as server, open_pool(limit=1) as pool:
        first = asyncio.create_task(fetch(pool, server.url("/first")))
        await eventually(arrived)
        waiting = asyncio.create_task(fetch(pool, server.url("/second")))
        await asyncio.sleep(0.01)
        await pool.close()
        with pytest.raises(ConnectionAbortedError):
            await asyncio.wait_for(first, PATIENCE)
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(waiting, PATIENCE)
    assert len(server.peers) == 1


async def test_host_name_is_resolved_by_the_resolver_and_sent_as_host() -> None:
    resolver = LoopbackResolver()
    async with raw_server(echo_path) as server, open_pool(resolver=resolver) as pool:
        url = URL(f"http://sms.provider.test:{server.port}/send")
        await fetch(pool, url)
        await fetch(pool, url)
        await fetch(pool, server.url("/literal"))  # an IP literal: no resolving
    assert resolver.asked == [("sms.provider.test", server.port)]
    assert server.requests[0].headers["host"] == f"sms.provider.test:{server.port}"
    # Another origin (name or literal) gets a connection of its own.
    assert [r.connection for r in server.requests] == [0, 0, 1]


# ---------------------------------------------------------------- deadlines


async def hold_forever(peer: Peer, request: Received) -> bool:
    await peer.until_client_closes()
    return False


async def within(pool: ConnectionPool, url: URL, seconds: float, **options: Any) -> HttpResponse:
    deadline = asyncio.get_running_loop().time() + seconds
    head = request_head("GET", url, ())
    async with asyncio.timeout(PATIENCE):
        return await pool.request("GET", url, head, None, cap=CAP, deadline=deadline, **options)


async def test_an_answer_past_the_deadline_times_out_and_its_connection_closes() -> None:
    async with raw_server(hold_forever) as server, open_pool(limit=1) as pool:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(pool, server.url("/slow"), 0.05)
        assert time.monotonic() - started < 0.5
        await eventually(server.peers[0].client_closed)
    async with raw_server(echo_path) as server, open_pool(limit=1) as pool:
        # The slot is given back and the deadline is no longer there once answered.
        answer = await within(pool, server.url("/fast"), 0.05)
        await asyncio.sleep(0.1)
        assert answer.status == 200


async def test_the_deadline_covers_waiting_for_a_slot_and_before_write() -> None:
    async with raw_server(hold_forever) as server, open_pool(limit=1) as pool:
        first = asyncio.create_task(within(pool, server.url("/held"), 5))
        await eventually_true(lambda: len(server.requests) == 1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(pool, server.url("/queued"), 0.05)
        assert time.monotonic() - started < 0.5  # not the test's own limit
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)

    async def slow_pacing() -> None:
        await asyncio.sleep(5)

    async with raw_server(echo_path) as server, open_pool() as pool:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(pool, server.url("/paced"), 0.05, before_write=slow_pacing)
        assert time.monotonic() - started < 0.5
        assert server.requests == []
