"""A lean HTTP/1.1 client: pooled keep-alive connections, one exchange at a time on each.

The dispatcher sends one small request after another to a handful of providers, so most of
what a general client does per request (sessions, cookie jars, trace signals, multidict
headers, a task per body write, stream readers) is overhead on the main thread. Here a
connection is an `asyncio.Protocol` that collects the answer in a buffer and wakes its
caller once, with the whole response parsed; the request's head is built once per
connector (`request_head`). One exchange costs ~1/6 of aiohttp's CPU against the same
local server (bench/README.md, "Eighth round").

What it does: HTTP/1.1 keep-alive with a pool per (scheme, host, port), idle connections
closed after `keepalive` seconds, at most `limit` requests in flight; TLS with the system's
certificates; answers framed by Content-Length, chunked encoding or the connection's end;
interim 1xx answers skipped; gzip and deflate bodies decoded; bodies cut at a cap (and the
connection dropped). What it leaves to the caller (`transport.HttpTransport`): redirects,
timeouts, the outbound guard's checks of URLs, and what errors mean. Host names are resolved
by the resolver it is given (the guard's, which refuses private addresses) when a connection
is opened; an IP literal is connected to as it is (the caller has checked it).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from aiohttp.abc import AbstractResolver
from yarl import URL

from smsrelay.connectors.exchange import HttpResponse

# Longest response head accepted (status line and headers).
MAX_HEAD_BYTES = 64 * 1024
# How long an idle connection is kept for the next request (aiohttp's default too).
KEEPALIVE_SECONDS = 15.0
_NO_BODY_STATUSES = frozenset({204, 304})
# The headers that say how an answer is framed and whether its connection may be reused.
_FRAMING = frozenset({"connection", "content-encoding", "content-length", "transfer-encoding"})
_FRAMING_LENGTHS = frozenset(len(name) for name in _FRAMING)


class HttpProtocolError(Exception):
    """The server's answer is not well-formed HTTP/1.1 (or it closed the connection before
    answering)."""


class ServerDisconnected(HttpProtocolError):
    """The connection closed before a complete answer arrived."""


# ---------------------------------------------------------------- the request


def request_head(method: str, url: URL, headers: Sequence[tuple[str, str]]) -> bytes:
    """The request line and headers, without Content-Length and the closing blank line.

    Adds Host, Accept and Accept-Encoding where the headers do not set them (as aiohttp
    does); drops any Content-Length or Transfer-Encoding given (the body's length is
    written by `request_bytes`). Raises ValueError for a header that would break the head.
    """
    target = url.raw_path_qs or "/"
    lines = [f"{method} {target} HTTP/1.1"]
    names = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered in ("content-length", "transfer-encoding"):
            continue
        if not name or any(c in name for c in " \t\r\n:\0") or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} cannot be sent: a line break, NUL or bad name")
        names.add(lowered)
        lines.append(f"{name}: {value}")
    extra = []
    if "host" not in names:
        # yarl's host[:port], the port left out where it is the scheme's, IPv6 bracketed.
        extra.append(f"Host: {url.host_port_subcomponent or ''}")
    if "accept" not in names:
        extra.append("Accept: */*")
    if "accept-encoding" not in names:
        extra.append("Accept-Encoding: gzip, deflate")
    return ("\r\n".join([lines[0], *extra, *lines[1:]]) + "\r\n").encode("utf-8")


def request_bytes(method: str, head: bytes, body: bytes | None) -> bytes:
    """The whole request: `head`, Content-Length where a body is or may be, the body."""
    if body:
        return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
    if method in ("POST", "PUT", "PATCH"):
        return head + b"Content-Length: 0\r\n\r\n"
    return head + b"\r\n"


# ---------------------------------------------------------------- the answer


class ResponseParser:
    """Reads one answer from bytes as they arrive; `feed` returns True once it is complete.

    The body is cut at `cap` bytes: a longer answer is complete once the cap is reached,
    and its connection is not reused (`keep_alive` False, `truncated` True). Raises
    HttpProtocolError on a malformed answer. Pure: no I/O, so it is tested by feeding
    bytes in any pieces.
    """

    __slots__ = (
        "_buffer",
        "_cap",
        "_chunk_left",
        "_chunks",
        "_coding",
        "_head_request",
        "_length",
        "_received",
        "_state",
        "body",
        "headers",
        "keep_alive",
        "status",
        "truncated",
    )

    def __init__(self, *, head_request: bool = False, cap: int = 1024 * 1024) -> None:
        self._buffer = b""
        self._cap = cap
        self._head_request = head_request
        # head -> length | chunked | eof -> done
        self._state = "head"
        self._length = 0
        # Chunked: bytes left of the current chunk; -1 a size line is next, 0 the CRLF
        # after a chunk, -2 the trailers.
        self._chunk_left = -1
        self._chunks: list[bytes] = []
        self._received = 0
        self._coding = ""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.keep_alive = False
        self.truncated = False

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the answer; True once the answer is complete."""
        if self._state == "done":
            if data:
                self.keep_alive = False  # more than one answer: out of step
            return True
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        while True:
            state = self._state
            if state == "head":
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise HttpProtocolError(
                            f"the response head is longer than {MAX_HEAD_BYTES} bytes"
                        )
                    self._buffer = buffer
                    return False
                self._read_head(buffer[:end])
                buffer = buffer[end + 4 :]
            elif state == "length":
                wanted = min(self._length, self._cap) - self._received
                piece = buffer[:wanted]
                self._take(piece)
                if self._received < min(self._length, self._cap):
                    return False
                self.truncated = self._length > self._cap
                return self._finish(buffer[len(piece) :])
            elif state == "chunked":
                buffer = self._read_chunks(buffer)
                if self._state == "done":
                    return self._finish(buffer)
                if self.truncated:
                    return self._finish(b"")
                self._buffer = buffer
                return False
            elif state == "eof":
                self._take(buffer)
                return self.truncated and self._finish(b"")
            else:
                return self._finish(buffer)

    def eof(self) -> bool:
        """The connection closed: True if that completes the answer (a body read to the
        end of the connection); raises ServerDisconnected if the answer is cut short."""
        if self._state == "done":
            return True
        if self._state == "eof":
            return self._finish(b"")
        if self._state == "head" and not self._buffer:
            raise ServerDisconnected("the server closed the connection without answering")
        raise ServerDisconnected("the server closed the connection in the middle of its answer")

    def _read_head(self, head: bytes) -> None:
        # Header values as aiohttp gives them: UTF-8, bytes that are not kept as escapes.
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or not (code.isascii() and code.isdigit())
            or rest[3:4] not in " "
        ):
            raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        # The few headers that frame the answer, by lower-case name (others are not looked
        # at here: a name's length rules most of them out before it is lowered).
        framing: dict[str, str] = {}
        last = ""
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                if not last:
                    raise HttpProtocolError("a header continuation line with no header")
                headers[last] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name[-1] in " \t":
                raise HttpProtocolError(f"malformed header line: {line[:80]!r}")
            value = value.strip()
            if name in headers:
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
            if len(name) in _FRAMING_LENGTHS and (key := name.lower()) in _FRAMING:
                framing[key] = f"{framing[key]}, {value}" if key in framing else value
            last = name
        if 100 <= status < 200:
            if status == 101:
                raise HttpProtocolError("the server switched protocols (101), which is not HTTP")
            return  # an interim answer: the real one follows
        self.status, self.headers = status, headers
        self._coding = framing.get("content-encoding", "").strip().lower()
        connection = framing.get("connection")
        tokens = {t.strip() for t in connection.lower().split(",")} if connection else ()
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in tokens
        else:
            self.keep_alive = "keep-alive" in tokens
        if self._head_request or status in _NO_BODY_STATUSES:
            self._state = "done"
            return
        coding = framing.get("transfer-encoding")
        if coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._state = "chunked"
            else:
                self._state, self.keep_alive = "eof", False
            return
        length = framing.get("content-length")
        if length is None:
            self._state, self.keep_alive = "eof", False
            return
        if length.isascii() and length.isdigit():
            self._length = int(length)
        else:
            values = {part.strip() for part in length.split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not (value.isascii() and value.isdigit()):
                raise HttpProtocolError(f"invalid Content-Length: {length[:40]!r}")
            self._length = int(value)
        self._state = "length" if self._length else "done"

    def _take(self, piece: bytes) -> None:
        """Keep a piece of the (still encoded) body, up to the cap."""
        if not piece:
            return
        room = self._cap - self._received
        if len(piece) > room:
            piece = piece[:room]
            self.truncated = True
        if piece:
            self._chunks.append(piece)
            self._received += len(piece)

    def _read_chunks(self, buffer: bytes) -> bytes:
        """Read chunked data from `buffer` until it runs out, the cap is passed or the
        last chunk's trailers end; returns what is not read yet."""
        while not self.truncated:
            left = self._chunk_left
            if left > 0:
                piece = buffer[:left]
                self._take(piece)
                self._chunk_left = left - len(piece)
                buffer = buffer[len(piece) :]
                if self._chunk_left:
                    return buffer
                continue
            if left == 0 and buffer[:2] not in (b"\r\n", b"\r", b""):
                raise HttpProtocolError("a chunk not followed by CRLF")
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise HttpProtocolError("a chunk size or trailer line that does not end")
                return buffer
            line, buffer = buffer[:end], buffer[end + 2 :]
            if left == 0:
                if line:
                    raise HttpProtocolError("a chunk not followed by CRLF")
                self._chunk_left = -1
            elif left == -2:
                if not line:
                    self._state = "done"
                    return buffer
            else:
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise HttpProtocolError(f"invalid chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                self._chunk_left = size if size else -2
        return buffer

    def _finish(self, rest: bytes) -> bool:
        if rest or self.truncated:
            # Bytes after a complete answer put the connection out of step; a cut body
            # leaves the rest unread on it. Neither connection is used again.
            self.keep_alive = False
        body = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks = []
        self.body = self._decoded(body)
        self._state = "done"
        return True

    def _decoded(self, body: bytes) -> bytes:
        coding = self._coding
        if not body or coding not in ("gzip", "x-gzip", "deflate"):
            return body
        if coding == "deflate":
            # RFC 9110's deflate is zlib-wrapped; some servers send it raw.
            wbits = zlib.MAX_WBITS if (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
        else:
            wbits = 16 + zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            decoded = inflater.decompress(body, self._cap)
        except zlib.error as exc:
            raise HttpProtocolError(f"cannot decode the {coding} body: {exc}") from None
        if inflater.unconsumed_tail:
            self.truncated = True
            self.keep_alive = False
        return decoded


# ---------------------------------------------------------------- connections


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one exchange at a time, the answer parsed as it comes."""

    __slots__ = ("_parser", "_waiter", "closed", "idle_since", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[ResponseParser] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio's (uvloop's are not,
        # and `smsrelay serve` runs on uvloop where it is installed).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            # Nobody asked: the server is out of step with us. Not used again.
            self.close()
            return
        try:
            if parser.feed(data):
                self._parser = None
                waiter.set_result(parser)
        except Exception as exc:
            self._parser = None
            if not isinstance(exc, HttpProtocolError):
                exc = HttpProtocolError(f"an answer that cannot be read: {exc}")
            waiter.set_exception(exc)
            self.close()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end(exc)

    def _end(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self._parser, self._waiter
        self._parser = None
        if parser is None or waiter is None or waiter.done():
            return
        try:
            parser.eof()
            waiter.set_result(parser)
        except HttpProtocolError as error:
            if exc is not None:
                error.__cause__ = exc
            waiter.set_exception(error)

    def exchange(self, data: bytes, parser: ResponseParser) -> asyncio.Future[ResponseParser]:
        """Write a request; the future is the parser once the answer is complete."""
        assert self.transport is not None
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._parser = parser
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self, why: OSError) -> None:
        """Close the connection; an exchange under way fails with `why`."""
        waiter = self._waiter
        if self._parser is not None and waiter is not None and not waiter.done():
            self._parser = None
            waiter.set_exception(why)
        self.close()


Origin = tuple[str, str, int]


def _time_out(answer: asyncio.Future[ResponseParser]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections per origin; at most `limit` requests at a time.

    `request` takes an idle connection of the URL's origin (or opens one), writes the
    request, waits for the whole answer and puts the connection back if it may be reused.
    A connection whose exchange fails or is cancelled is closed, never reused.
    """

    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        limit: int = 256,
        keepalive: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        self._keepalive = keepalive
        self._ssl_context = ssl_context
        self._clock = clock
        self._idle: dict[Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._pruning: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: URL,
        head: bytes,
        body: bytes | None,
        *,
        cap: int,
        deadline: float | None = None,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> HttpResponse:
        """One exchange: `head` from `request_head`, `body` as is; the answer, body cut at
        `cap`. Raises TimeoutError past `deadline` (the loop's clock; None: none), OSError
        (connecting, TLS, resolving: `BlockedAddressError` among them) or HttpProtocolError
        (the answer).

        Waits that seldom happen (for a slot, a new connection, `before_write`) are timed
        with `asyncio.timeout_at`; the answer, awaited every time, by one timer handle that
        fails it (cheaper: no task cancellation to set up and undo).
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        slots = self._slots
        if slots is not None:
            if slots.locked():
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            else:
                await slots.acquire()
        try:
            if self._closed:
                raise RuntimeError("the connection pool is closed")
            origin = (url.scheme, url.raw_host or "", url.port or 0)
            connection = self._idle_connection(origin)
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._open(origin)
            self._busy.add(connection)
            try:
                if before_write is not None:
                    async with asyncio.timeout_at(deadline):
                        await before_write()
                        if connection.closed:
                            # Closed by the server meanwhile: a fresh one instead.
                            self._busy.discard(connection)
                            connection = self._idle_connection(origin) or await self._open(origin)
                            self._busy.add(connection)
                parser = ResponseParser(head_request=method == "HEAD", cap=cap)
                answer = connection.exchange(request_bytes(method, head, body), parser)
                if deadline is None:
                    done = await answer
                else:
                    timer = asyncio.get_running_loop().call_at(deadline, _time_out, answer)
                    try:
                        done = await answer
                    finally:
                        timer.cancel()
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
            if done.keep_alive and not connection.closed and not self._closed:
                self._put_back(origin, connection)
            else:
                connection.close()
            return HttpResponse(done.status, done.headers, done.body)
        finally:
            if slots is not None:
                slots.release()

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest_kept = self._clock() - self._keepalive
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= oldest_kept:
                return connection
            connection.close()
        return None

    def _put_back(self, origin: Origin, connection: _Connection) -> None:
        connection.idle_since = self._clock()
        self._idle.setdefault(origin, []).append(connection)
        if self._pruning is None:
            loop = asyncio.get_running_loop()
            self._pruning = loop.call_later(self._keepalive, self._prune)

    def _prune(self) -> None:
        """Close connections idle for longer than `keepalive`."""
        self._pruning = None
        oldest_kept = self._clock() - self._keepalive
        for origin, idle in list(self._idle.items()):
            kept = [c for c in idle if not c.closed and c.idle_since >= oldest_kept]
            for connection in idle:
                if connection not in kept:
                    connection.close()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle and not self._closed:
            loop = asyncio.get_running_loop()
            self._pruning = loop.call_later(self._keepalive, self._prune)

    async def _open(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._ssl_context
            if tls is None:
                tls = self._ssl_context = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        addresses = await self._addresses(host, port)
        last_error: OSError | None = None
        for address, family in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    port,
                    family=family,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            except ssl.SSLError:
                raise
            except OSError as exc:
                last_error = exc
                continue
            # TCP_NODELAY is already set: asyncio and uvloop both set it on TCP transports.
            return connection
        assert last_error is not None
        raise OSError(
            last_error.errno,
            f"cannot connect to {host}:{port}: {last_error.strerror or last_error}",
        ) from last_error

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        """Where to connect: an IP literal as it is, a name through the resolver."""
        try:
            literal = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            literal = None
        if literal is not None:
            return [(host, socket.AF_INET6 if ":" in host else socket.AF_INET)]
        results: list[Any] = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        return [(result["host"], result["family"]) for result in results]

    async def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        if self._pruning is not None:
            self._pruning.cancel()
            self._pruning = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.abort(ConnectionAbortedError("the connection pool was closed"))
        await asyncio.sleep(0)  # let the transports finish closing
