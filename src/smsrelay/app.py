"""Build the smsrelay web application from settings and its parts (no import-time wiring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from sqlalchemy import text

from smsrelay import __version__
from smsrelay.api import connectors as connectors_api
from smsrelay.api import delivery_reports as dlr_api
from smsrelay.api import messages as messages_api
from smsrelay.api import senders as senders_api
from smsrelay.api.problems import install_problem_handlers
from smsrelay.dispatch.delivery_mapper import DeliveryMapper
from smsrelay.dispatch.transport import AiohttpTransport, Transport
from smsrelay.dispatch.worker import Dispatcher
from smsrelay.runtime import Runtime
from smsrelay.sandbox import Sandbox, SandboxSettings, create_sandbox_app
from smsrelay.settings import Settings
from smsrelay.setup import ensure_sandbox_connector
from smsrelay.store.database import open_database
from smsrelay.store.secret_box import load_secret_box

log = logging.getLogger("smsrelay")

SANDBOX_PREFIX = "/sandbox"


def create_app(
    settings: Settings,
    *,
    transport: Transport | None = None,
    sandbox_settings: SandboxSettings | None = None,
) -> FastAPI:
    """The FastAPI app: API, DLR intake, sandbox (optional) and the in-process dispatcher."""
    sandbox = Sandbox(sandbox_settings or SandboxSettings()) if settings.sandbox else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = open_database(settings.database_url)
        await database.migrate()
        box = load_secret_box(settings)
        outbound = transport or AiohttpTransport(allow_hosts=_allow_hosts(settings))
        runtime = Runtime(settings=settings, database=database, secret_box=box, transport=outbound)
        stop = asyncio.Event()
        task: asyncio.Task[Any] | None = None
        if sandbox is not None:
            await sandbox.start()
            runtime.sandbox = sandbox
            await ensure_sandbox_connector(runtime, settings.base_url + SANDBOX_PREFIX)
        mapper_task: asyncio.Task[Any] | None = None
        if settings.dispatcher:
            runtime.dispatcher = Dispatcher(database, box, outbound, settings)
            task = asyncio.create_task(runtime.dispatcher.run(stop), name="dispatcher")
            mapper = DeliveryMapper(database, box, settings)
            runtime.extras["delivery_mapper"] = mapper  # DLR intake wakes it
            mapper_task = asyncio.create_task(mapper.run(stop), name="delivery-mapper")
        app.state.runtime = runtime
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=15)
            if mapper_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(mapper_task, timeout=15)
            if sandbox is not None:
                await sandbox.close()
            await outbound.aclose()
            await database.close()

    app = FastAPI(
        title="smsrelay",
        version=__version__,
        summary="Self-hosted SMS connector platform",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(connectors_api.router)
    app.include_router(senders_api.router)
    app.include_router(messages_api.router)
    app.include_router(dlr_api.router)
    app.include_router(dlr_api.mapping_router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness: the process answers and its database does."""
        runtime: Runtime = app.state.runtime
        try:
            async with runtime.database.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # the database is down; say so without a traceback
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(SANDBOX_PREFIX + "/" if sandbox is not None else "/docs")

    @app.get("/robots.txt", include_in_schema=False)
    async def robots() -> PlainTextResponse:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    if sandbox is not None:
        app.mount(SANDBOX_PREFIX, create_sandbox_app(sandbox))
    return app


def _allow_hosts(settings: Settings) -> tuple[str, ...]:
    """The SSRF allow-list: configured hosts, plus this server itself when it hosts the sandbox."""
    hosts = list(settings.allow_hosts)
    if settings.sandbox:
        hosts += [settings.host, "127.0.0.1", "localhost"]
    return tuple(dict.fromkeys(hosts))
