"""Build the smsrelay web application from settings and its parts (no import-time wiring)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import text

from smsrelay import __version__
from smsrelay.api import campaigns as campaigns_api
from smsrelay.api import connector_groups as connector_groups_api
from smsrelay.api import connectors as connectors_api
from smsrelay.api import delivery_reports as dlr_api
from smsrelay.api import messages as messages_api
from smsrelay.api import senders as senders_api
from smsrelay.api import stats as stats_api
from smsrelay.api import suppressions as suppressions_api
from smsrelay.api import webhooks as webhooks_api
from smsrelay.api.dlr_intake import DeliveryReportEndpoint, close_delivery_report_intake
from smsrelay.api.limits import install_inbound_limits
from smsrelay.api.problems import install_problem_handlers
from smsrelay.compat import clevertap as clevertap_api
from smsrelay.compat import moengage as moengage_api
from smsrelay.compat.webhook_formats import register_platform_formats
from smsrelay.dashboard import create_dashboard_app
from smsrelay.dispatch.background import BackgroundWork, background_work
from smsrelay.dispatch.transport import Transport, outbound_transport
from smsrelay.gc_tuning import tune_garbage_collector
from smsrelay.metrics import CONTENT_TYPE, render
from smsrelay.runtime import Runtime
from smsrelay.sandbox import Sandbox, SandboxSettings, create_sandbox_app
from smsrelay.settings import Settings
from smsrelay.setup import ensure_sandbox_connector
from smsrelay.store.database import open_database
from smsrelay.store.outbox import waiting_messages
from smsrelay.store.secret_box import load_secret_box

log = logging.getLogger("smsrelay")

SANDBOX_PREFIX = "/sandbox"
DASHBOARD_PREFIX = "/ui"


def create_app(
    settings: Settings,
    *,
    transport: Transport | None = None,
    sandbox_settings: SandboxSettings | None = None,
    tune_gc: bool = False,
) -> FastAPI:
    """The FastAPI app: API, DLR intake, sandbox (optional) and the in-process dispatcher.

    `tune_gc` (set by `smsrelay serve`, a process of its own) applies
    `tune_garbage_collector` once start-up is done.
    """
    sandbox = Sandbox(sandbox_settings or SandboxSettings()) if settings.sandbox else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = open_database(settings.database_url)
        await database.migrate()
        box = load_secret_box(settings)
        outbound = transport or outbound_transport(
            settings.http_client, allow_hosts=outbound_allow_hosts(settings)
        )
        runtime = Runtime(settings=settings, database=database, secret_box=box, transport=outbound)
        if sandbox is not None:
            await sandbox.start()
            runtime.sandbox = sandbox
            await ensure_sandbox_connector(runtime, settings.base_url + SANDBOX_PREFIX)
        work: BackgroundWork | None = None
        if settings.dispatcher:
            work = background_work(database, box, outbound, settings)
            runtime.dispatcher = work.dispatcher
            # The DLR intake, campaigns API and webhooks tests wake or steer these loops.
            runtime.extras["delivery_mapper"] = work.delivery_mapper
            runtime.extras["webhook_sender"] = work.webhook_sender
            runtime.extras["campaign_runner"] = work.campaign_runner
            work.start()
        app.state.runtime = runtime
        if tune_gc:
            tune_garbage_collector()
        try:
            yield
        finally:
            # Callbacks already taken are committed before the database goes away.
            await close_delivery_report_intake(runtime)
            if work is not None:
                await work.stop()
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
    install_inbound_limits(app, settings)  # rate limit, body caps, strict JSON
    # Outermost: DLR callbacks are the busiest path and need none of FastAPI's routing.
    app.add_middleware(DeliveryReportEndpoint)
    register_platform_formats()  # webhook formats `moengage` and `clevertap`
    # First: callbacks are the busiest path, and routes are matched in order.
    app.include_router(dlr_api.router)
    app.include_router(connectors_api.router)
    app.include_router(connectors_api.presets_router)
    app.include_router(senders_api.router)
    app.include_router(connector_groups_api.router)
    app.include_router(moengage_api.router)
    app.include_router(clevertap_api.router)
    app.include_router(messages_api.router)
    app.include_router(campaigns_api.router)
    app.include_router(dlr_api.mapping_router)
    app.include_router(webhooks_api.router)
    app.include_router(stats_api.router)
    app.include_router(suppressions_api.router)

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

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: this process's counters and the outbox read from the database.

        Like `/healthz`, it takes no API key: it shows connector names and counts, never
        message content, recipients or secrets. Keep it to the network Prometheus scrapes.
        """
        runtime: Runtime = app.state.runtime
        try:
            waiting = await waiting_messages(runtime.database)
        except Exception:  # the database is down: this process's own metrics still help
            log.warning("metrics: the outbox could not be read", exc_info=True)
            return Response(render(), media_type=CONTENT_TYPE)
        return Response(render(waiting), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(DASHBOARD_PREFIX + "/")

    @app.get("/robots.txt", include_in_schema=False)
    async def robots() -> PlainTextResponse:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    if sandbox is not None:
        app.mount(SANDBOX_PREFIX, create_sandbox_app(sandbox))
    app.mount(DASHBOARD_PREFIX, create_dashboard_app(lambda: app.state.runtime))
    return app


def outbound_allow_hosts(settings: Settings) -> tuple[str, ...]:
    """The SSRF allow-list: configured hosts, plus this server's own port when it hosts the
    sandbox (not the whole host: other local services stay out of reach)."""
    hosts = list(settings.allow_hosts)
    if settings.sandbox:
        for host in (settings.host, "127.0.0.1", "localhost"):
            address = f"[{host}]" if ":" in host else host
            hosts.append(f"{address}:{settings.port}")
    return tuple(dict.fromkeys(hosts))
