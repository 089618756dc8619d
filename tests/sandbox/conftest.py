"""Fixtures: a running sandbox, an HTTP client, and a local DLR receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from smsrelay.sandbox.settings import SandboxSettings
from smsrelay.sandbox.testing import RunningSandbox, running_sandbox

# Fast timings for tests: immediate reports, quick callback retries.
FAST = SandboxSettings(dlr_delay_seconds=0, callback_retry_seconds=0.01, slow_seconds=0.2)


@dataclass(frozen=True)
class ReceivedCallback:
    """One request the receiver got."""

    method: str
    path: str
    content_type: str
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.body.decode()))


class CallbackReceiver:
    """A tiny aiohttp server on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.received: list[ReceivedCallback] = []
        self.base_url = ""
        self._answers: deque[int] = deque()
        self._changed = asyncio.Event()
        self.on_request: Callable[[ReceivedCallback], None] | None = None

    def url(self, path: str = "/dlr") -> str:
        return self.base_url + path

    def answer_with(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (then 200 again)."""
        self._answers.extend(statuses)

    async def handle(self, request: web.Request) -> web.Response:
        got = ReceivedCallback(
            method=request.method,
            path=request.path,
            content_type=request.content_type,
            body=await request.read(),
        )
        self.received.append(got)
        if self.on_request is not None:
            self.on_request(got)
        self._changed.set()
        self._changed = asyncio.Event()
        status = self._answers.popleft() if self._answers else 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": self.url("/elsewhere")})
        return web.Response(status=status, text="ok")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedCallback]:
        """Wait until at least `count` requests arrived; returns all of them."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await self._changed.wait()
        return self.received


def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    got = CallbackReceiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    got.base_url = f"http://{host}:{port}"
    try:
        yield got
    finally:
        await runner.cleanup()


@pytest.fixture
async def sbx() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(FAST) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
