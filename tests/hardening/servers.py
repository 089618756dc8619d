"""Local servers for the hardening tests, all on 127.0.0.1 (and ::1): recorders and a hostile provider.

- `recording_server`: an aiohttp app that records every request it receives and answers
  with a handler; used to prove that a refused target saw nothing.
- `HostileProvider`: a raw-asyncio HTTP/1.1 server that, per recipient number, plays a
  script of misbehaviours (reset, timeout, slow-loris, garbage, a cut body) and counts
  every request per message id, with whether its answer could reach the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """One request a recording server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A running recording server: its port, URL and what it received."""

    port: int
    seen: list[Recorded] = field(default_factory=list)
    ipv6: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "accepted", "id": "rec-1"})


@asynccontextmanager
async def recording_server(handler: RouteHandler | None = None) -> AsyncIterator[Recorder]:
    """Serve `handler` on 127.0.0.1 (and ::1 at the same port when possible), recording all."""
    answer = handler or _ok
    recorder = Recorder(port=0)

    async def record(request: web.Request) -> web.StreamResponse:
        recorder.seen.append(
            Recorded(request.method, request.path_qs, dict(request.headers), await request.read())
        )
        return await answer(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    with contextlib.suppress(OSError):
        await web.TCPSite(runner, "::1", recorder.port).start()
        recorder.ipv6 = True
    try:
        yield recorder
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- the hostile provider

# What the provider does with one request. "Lost" behaviours may have been accepted by the
# provider although the client never got the answer: the only requests that may repeat.
OK = "ok"
ERROR_500 = "error_500"
RESET = "reset"  # TCP RST before any answer
TIMEOUT = "timeout"  # accepts, answers after the client's timeout
SLOW_LORIS = "slow_loris"  # headers at once, then one byte at a time past the timeout
CUT_BODY = "cut_body"  # headers promise 200 bytes, 20 come, then the connection closes
HTML_200 = "html_200"  # 200 with an HTML error page
NON_JSON_200 = "non_json_200"  # 200 with plain text
TRUNCATED_JSON_200 = "truncated_json_200"  # 200, JSON cut in the middle (length honest)
LOST_ANSWER = frozenset({TIMEOUT, SLOW_LORIS, CUT_BODY, RESET})
ACCEPTING = frozenset({OK, TIMEOUT, SLOW_LORIS, CUT_BODY})


@dataclass
class Hit:
    """One send request: which script step it got."""

    behaviour: str
    to: str


@dataclass
class HostileProvider:
    """A provider on 127.0.0.1 whose answers follow a script per recipient number.

    `scripts[to]` lists the behaviour of the 1st, 2nd, … request for that number; after the
    script runs out, requests are answered `ok`. Requests are JSON `{"to", "ref", ...}`.
    """

    scripts: Mapping[str, Sequence[str]]
    hold_seconds: float = 3.0  # how long TIMEOUT / SLOW_LORIS keep the client waiting
    port: int = 0
    hits: dict[str, list[Hit]] = field(default_factory=dict)  # by message id (ref)
    _by_number: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, ref: str) -> list[str]:
        """The behaviours the requests of one message got, in order."""
        return [hit.behaviour for hit in self.hits.get(ref, [])]

    def _next_behaviour(self, to: str) -> str:
        n = self._by_number.get(to, 0)
        self._by_number[to] = n + 1
        script = self.scripts.get(to, ())
        return script[n] if n < len(script) else OK

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                document = json.loads(body)
            except ValueError:
                document = {}
            to, ref = str(document.get("to", "")), str(document.get("ref", ""))
            behaviour = self._next_behaviour(to)
            self.hits.setdefault(ref, []).append(Hit(behaviour, to))
            await self._act(behaviour, ref, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _act(self, behaviour: str, ref: str, writer: asyncio.StreamWriter) -> None:
        accepted = json.dumps({"status": "accepted", "id": f"prov-{ref}"}).encode()
        if behaviour == OK:
            await _respond(writer, 200, "application/json", accepted)
        elif behaviour == ERROR_500:
            await _respond(writer, 500, "application/json", b'{"error": "internal error"}')
        elif behaviour == RESET:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif behaviour == TIMEOUT:
            await asyncio.sleep(self.hold_seconds)
            await _respond(writer, 200, "application/json", accepted)
        elif behaviour == SLOW_LORIS:
            writer.write(_head(200, "application/json", 200))
            await writer.drain()
            steps = max(1, int(self.hold_seconds / 0.1))
            for _ in range(steps):  # one byte per 0.1 s: never done before the client gives up
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        elif behaviour == CUT_BODY:
            writer.write(_head(200, "application/json", 200) + accepted[:20])
            await writer.drain()
        elif behaviour == HTML_200:
            page = b"<html><head><title>Error</title></head><body><h1>Service unavailable"
            await _respond(writer, 200, "text/html", page + b"</h1></body></html>")
        elif behaviour == NON_JSON_200:
            await _respond(writer, 200, "text/plain", b"OK thanks")
        elif behaviour == TRUNCATED_JSON_200:
            await _respond(writer, 200, "application/json", b'{"status": "accep')
        else:
            raise AssertionError(f"unknown behaviour {behaviour}")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HostileProvider]:
        """Serve on 127.0.0.1 at a free port until the block ends."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()


def _head(status: int, content_type: str, length: int) -> bytes:
    reason = {200: "OK", 500: "Internal Server Error"}.get(status, "Status")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes
) -> None:
    writer.write(_head(status, content_type, len(body)) + body)
    await writer.drain()
