"""A minimal SMS provider for benchmarks: raw asyncio HTTP/1.1, answers `{"id": "..."}` fast.

Run `python bench/minimal_provider.py --port 8600` (the bench scripts start it themselves, in
a process of its own so it does not share the dispatcher's core). It keeps connections
alive, reads `Content-Length` bodies and answers every POST at once:

- `POST /send/<name>`: one message, answered `{"id": "p<n>"}`;
- `POST /batch/<name>`: a JSON body `{"messages": [...]}`, answered with one id per item,
  `{"messages": [{"id": "p<n>"}, ...]}`;
- `GET /stats`: per `<name>`, requests and messages received and the arrival time (Unix
  seconds) of the first and last message; with `--record`, also every arrival time and the
  value of every `"ref"` field seen (the message ids), to check rates and losses;
- `POST /reset`: forget everything counted.

Nothing else of HTTP is implemented: no chunked bodies, no pipelining beyond what arrives
in order, no TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_REF = re.compile(rb'"ref"\s*:\s*"([^"]+)"')
_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%s"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Tally:
    """What one `<name>` received."""

    requests: int = 0
    messages: int = 0
    first: float = 0.0
    last: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)

    def add(self, count: int, at: float, refs: list[bytes] | None) -> None:
        self.requests += 1
        self.messages += count
        if not self.first:
            self.first = at
        self.last = at
        if refs is not None:
            self.arrivals.extend([at] * count)
            self.refs.extend(r.decode() for r in refs)


class Provider:
    """The counters shared by every connection."""

    def __init__(self, *, record: bool) -> None:
        self.record = record
        self.tallies: dict[str, Tally] = {}
        self.next_id = 0

    def tally(self, name: str) -> Tally:
        found = self.tallies.get(name)
        if found is None:
            found = self.tallies[name] = Tally()
        return found

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                "requests": t.requests,
                "messages": t.messages,
                "first": t.first,
                "last": t.last,
                **({"arrivals": t.arrivals, "refs": t.refs} if self.record else {}),
            }
            for name, t in self.tallies.items()
        }

    def answer(self, method: bytes, path: bytes, body: bytes) -> bytes:
        """The whole HTTP response to one request."""
        now = time.time()
        if method == b"POST" and path.startswith(b"/send/"):
            self.next_id += 1
            refs = _REF.findall(body) if self.record else None
            self.tally(path[6:].decode()).add(1, now, refs)
            payload = b'{"id":"p%d"}' % self.next_id
        elif method == b"POST" and path.startswith(b"/batch/"):
            items = json.loads(body)["messages"]
            start = self.next_id
            self.next_id += len(items)
            refs = _REF.findall(body) if self.record else None
            self.tally(path[7:].decode()).add(len(items), now, refs)
            ids = ",".join(f'{{"id":"p{n}"}}' for n in range(start + 1, start + 1 + len(items)))
            payload = b'{"messages":[' + ids.encode() + b"]}"
        elif method == b"GET" and path == b"/stats":
            payload = json.dumps(self.stats()).encode()
        elif method == b"POST" and path == b"/reset":
            self.tallies.clear()
            payload = b"{}"
        else:
            return _NOT_FOUND
        return _REPLY % (len(payload), payload)


class _Connection(asyncio.Protocol):
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while True:
            end = self.buffer.find(_HEADER_END)
            if end < 0:
                break
            head = self.buffer[:end]
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            total = end + 4 + length
            if len(self.buffer) < total:
                break
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            method, path, _ = head.split(b" ", 2)
            replies.append(self.provider.answer(method, path, body))
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))


async def serve(sock: socket.socket, provider: Provider, ready: Callable[[], None]) -> None:
    """Answer on `sock` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(provider), sock=sock, backlog=1024)
    ready()
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", action="store_true", help="keep arrival times and refs")
    options = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", options.port))
    provider = Provider(record=options.record)
    asyncio.run(serve(sock, provider, lambda: print("ready", flush=True)))


if __name__ == "__main__":
    main()
