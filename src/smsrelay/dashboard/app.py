"""Build the dashboard: a small app of server-rendered pages, mounted by the main app at /ui.

    app.mount("/ui", create_dashboard_app(lambda: app.state.runtime))

It shares the main app's Runtime (database, secret box, dispatcher, sandbox) and has its
own error pages, static files and security headers; it is not part of the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from smsrelay.dashboard import (
    analytics_routes,
    campaign_routes,
    connector_routes,
    delivery_routes,
    login_routes,
    message_routes,
    overview_routes,
    preset_routes,
    settings_routes,
    suppression_routes,
)
from smsrelay.dashboard.pages import (
    STATIC_VERSION,
    CsrfRejected,
    Dashboard,
    LoginRequired,
    dashboard_of,
    is_fetch,
    ui_root,
)
from smsrelay.runtime import Runtime

# Scripts and styles only from our own static files; no inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def _error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    ui = ui_root(request)
    html = dashboard_of(request).render_html(
        "error.html",
        {
            "ui": ui,
            "static": f"{ui}/static",
            "static_version": STATIC_VERSION,
            "status": status,
            "title": title,
            "detail": detail,
        },
    )
    return HTMLResponse(html, status_code=status)


def create_dashboard_app(get_runtime: Callable[[], Runtime]) -> FastAPI:
    """The dashboard app; `get_runtime` returns the main app's Runtime once it has started."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="smsrelay dashboard")
    app.state.dashboard = Dashboard(get_runtime)
    app.mount(
        "/static",
        StaticFiles(packages=[("smsrelay.dashboard", "static")]),
        name="static",
    )
    for module in (
        login_routes,
        overview_routes,
        preset_routes,
        connector_routes,
        delivery_routes,
        message_routes,
        campaign_routes,
        analytics_routes,
        settings_routes,
        suppression_routes,
    ):
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: Exception) -> Response:
        if is_fetch(request) or request.method != "GET":
            return JSONResponse({"detail": "sign in again"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{ui_root(request)}/login?next={quote(target)}", status_code=303)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, exc: Exception) -> Response:
        if is_fetch(request):
            return JSONResponse({"detail": str(exc)}, status_code=403)
        return _error_page(
            request,
            403,
            "The form expired",
            f"{exc}. Go back, reload the page and submit it again.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if is_fetch(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        titles = {404: "Not found", 405: "Not allowed"}
        return _error_page(
            request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail)
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        names = ", ".join(str(err["loc"][-1]) for err in exc.errors() if err.get("loc"))
        detail = f"The address carries a value this page does not understand ({names})."
        if is_fetch(request):
            return JSONResponse({"detail": detail}, status_code=400)
        return _error_page(request, 400, "Bad request", detail)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith(ui_root(request) + "/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
