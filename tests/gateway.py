"""A real smsrelay server for end-to-end tests: uvicorn on 127.0.0.1, a free port, this loop.

    async with running_gateway(database_url, tmp_path) as gw:
        r = await gw.client.post("/v1/messages", json={...})

The server is exactly what `smsrelay serve` runs (API, DLR intake, dispatcher, sandbox
mounted at /sandbox), built from Settings; `gw.runtime` gives the live parts to assert on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from smsrelay.app import create_app
from smsrelay.dispatch.transport import Transport
from smsrelay.runtime import Runtime
from smsrelay.sandbox import Sandbox, SandboxSettings
from smsrelay.sandbox.server import bind_free_port
from smsrelay.settings import Settings
from smsrelay.store.api_keys import create_api_key

STARTUP_TIMEOUT_SECONDS = 20.0


@dataclass
class Gateway:
    """A running server: its URL, an authenticated client, and its live parts."""

    base_url: str
    api_key: str
    client: httpx.AsyncClient
    runtime: Runtime

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.runtime.sandbox
        return sandbox

    async def wait_for_status(
        self, message_id: str, statuses: set[str] | str, *, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the API until the message reaches one of `statuses`; return it."""
        wanted = {statuses} if isinstance(statuses, str) else statuses
        message: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while True:
                response = await self.client.get(f"/v1/messages/{message_id}")
                response.raise_for_status()
                message = response.json()
                if message["status"] in wanted:
                    return message
                await asyncio.sleep(0.05)


@asynccontextmanager
async def running_gateway(
    database_url: str,
    workdir: Path,
    *,
    transport: Transport | None = None,
    sandbox_settings: SandboxSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """Serve smsrelay on a free port with the given database; yields a Gateway."""
    sock = bind_free_port("127.0.0.1")
    host, port = sock.getsockname()[:2]
    settings = Settings(
        database_url=database_url,
        host=host,
        port=port,
        secret_key_file=str(workdir / "smsrelay.key"),
        poll_interval_seconds=0.05,
        allow_hosts=("127.0.0.1", "localhost"),
    )
    settings = replace(settings, **overrides)
    app = create_app(
        settings,
        transport=transport,
        sandbox_settings=sandbox_settings or SandboxSettings(dlr_delay_seconds=0.05),
    )
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        runtime: Runtime = app.state.runtime
        _, api_key = await create_api_key(runtime.database, "tests")
        base_url = f"http://{host}:{port}"
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            yield Gateway(base_url=base_url, api_key=api_key, client=client, runtime=runtime)
    finally:
        server.should_exit = True
        await task
        sock.close()
