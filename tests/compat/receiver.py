"""A local HTTP receiver (aiohttp.web on 127.0.0.1) standing in for MoEngage or CleverTap.

    async with receiving() as rx:
        ... rx.url ...
        posts = await rx.wait_for(2)

It records every request (path, headers, body) and answers 200, or the statuses given in
`answers` first (e.g. [503] makes the first POST fail, so the sender must retry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Where the gateway posts, and what it posted."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, *, timeout: float = 20.0) -> list[Received]:
        """Wait until `count` requests were answered 2xx; return every request so far."""
        async with asyncio.timeout(timeout):
            while sum(1 for r in self.requests if r.headers.get("x-answered") == "2xx") < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    def accepted(self) -> list[Received]:
        """The requests answered 2xx."""
        return [r for r in self.requests if r.headers.get("x-answered") == "2xx"]


@asynccontextmanager
async def receiving(answers: Sequence[int] = ()) -> AsyncIterator[Receiver]:
    """Serve a receiver on a free port of 127.0.0.1 for the duration of the block."""
    receiver = Receiver(url="", answers=list(answers))

    async def handle(request: web.Request) -> web.Response:
        status = receiver.answers.pop(0) if receiver.answers else 200
        headers = dict(request.headers)
        headers["x-answered"] = "2xx" if 200 <= status < 300 else str(status)
        receiver.requests.append(Received(request.path, headers, await request.read()))
        receiver._arrived.set()
        return web.json_response({"status": "success" if status < 300 else "fail"}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/callback"
    try:
        yield receiver
    finally:
        await runner.cleanup()
