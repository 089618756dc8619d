"""Running the sandbox on its own port (`smsrelay sandbox`)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.types import ASGIApp

from smsrelay.sandbox.app import create_sandbox_app
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.settings import SandboxSettings

# Slow answers (0408, chaos) must not hold a shutdown for their whole delay.
GRACEFUL_SHUTDOWN_SECONDS = 2


async def serve_sandbox(host: str, port: int, settings: SandboxSettings) -> None:
    """Serve the sandbox with uvicorn until interrupted; port 0 picks a free one."""
    sandbox = Sandbox(settings)
    await sandbox.start()
    try:
        server = uvicorn.Server(sandbox_server_config(create_sandbox_app(sandbox), host, port))
        await server.serve()
    finally:
        # uvicorn re-raises a captured Ctrl-C as it returns, which cancels this task; the
        # callback client must still be closed cleanly.
        closing = asyncio.ensure_future(sandbox.close())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await closing
            raise


def sandbox_server_config(
    app: ASGIApp, host: str, port: int, *, log_level: str = "info"
) -> uvicorn.Config:
    """The uvicorn configuration the sandbox runs with (no lifespan: the caller owns it)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def bind_free_port(host: str = "127.0.0.1") -> socket.socket:
    """A listening-ready socket on a free port of `host`, for a server to take over."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock
