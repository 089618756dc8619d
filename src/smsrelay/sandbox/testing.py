"""Running the sandbox inside a test's event loop, on 127.0.0.1 and a free port.

In a test: `async with running_sandbox(SandboxSettings(dlr_delay_seconds=0)) as sbx:`, send
to `f"{sbx.base_url}/api/messages"`, then assert on `sbx.sandbox` (`messages()`,
`wait_until(...)`, `wait_idle()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from smsrelay.sandbox.app import create_sandbox_app
from smsrelay.sandbox.connectors import sandbox_connector_yaml
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.server import bind_free_port, sandbox_server_config
from smsrelay.sandbox.settings import SandboxSettings

STARTUP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    """A sandbox served over HTTP: where it listens, and its state to assert on."""

    base_url: str
    sandbox: Sandbox

    def connector_yaml(self, *, batch: bool = False) -> str:
        """The shipped sandbox connector pointed at this sandbox."""
        return sandbox_connector_yaml(self.base_url, batch=batch)


@asynccontextmanager
async def running_asgi_app(app: ASGIApp) -> AsyncIterator[str]:
    """Serve any ASGI app with uvicorn on 127.0.0.1 and a free port; yields its base URL."""
    sock = bind_free_port("127.0.0.1")
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(sandbox_server_config(app, host, port, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    task.result()  # raises the reason it stopped
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def running_sandbox(settings: SandboxSettings | None = None) -> AsyncIterator[RunningSandbox]:
    """Start a sandbox on 127.0.0.1 (free port) in the current event loop; stop it after."""
    sandbox = Sandbox(settings)
    await sandbox.start()
    try:
        async with running_asgi_app(create_sandbox_app(sandbox)) as base_url:
            yield RunningSandbox(base_url=base_url, sandbox=sandbox)
    finally:
        await sandbox.close()
