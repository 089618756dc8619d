"""What every dashboard page needs: the live parts, the signed-in user, CSRF checks, rendering.

Handlers take `Page` (a dependency): it knows the runtime, the user and the session's
CSRF token, renders templates with the shared context, and reads forms after checking
their CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smsrelay.dashboard.connector_form import FormData
from smsrelay.dashboard.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionSigner,
)
from smsrelay.dashboard.templating import build_environment
from smsrelay.runtime import Runtime
from smsrelay.store.users import User, get_user, session_signing_key

STATIC_VERSION = "1"
# A one-time message for the next page ("Connector saved."), set on redirects.
NOTICE_COOKIE = "smsrelay_notice"
# Field values longer than this are refused: nothing in the dashboard needs more.
MAX_FORM_BYTES = 1024 * 1024


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, fetches get 401."""


class CsrfRejected(Exception):
    """A state-changing request without this session's CSRF token."""


class Dashboard:
    """The dashboard's live parts in one process: runtime, templates, signer, throttle."""

    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self._get_runtime = get_runtime
        self.templates = build_environment()
        self.throttle = LoginThrottle()
        self._signer: SessionSigner | None = None

    @property
    def runtime(self) -> Runtime:
        """The Runtime of the app the dashboard is mounted in."""
        return self._get_runtime()

    async def signer(self) -> SessionSigner:
        """The session signer, its key loaded from the database on first use."""
        if self._signer is None:
            runtime = self.runtime
            key = await session_signing_key(runtime.database, runtime.secret_box)
            self._signer = SessionSigner(key)
        return self._signer

    def render_html(self, template: str, context: dict[str, Any]) -> str:
        """A template rendered with `context` (autoescaped)."""
        return self.templates.get_template(template).render(context)


def dashboard_of(request: Request) -> Dashboard:
    """The Dashboard serving this request."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def ui_root(request: Request) -> str:
    """Where the dashboard is mounted (`/ui`), for building links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def set_notice(response: Response, ui: str, notice: str) -> None:
    """Show `notice` once, on the next dashboard page."""
    response.set_cookie(
        NOTICE_COOKIE, quote(notice[:300]), httponly=True, samesite="strict", path=ui + "/"
    )


def read_notice(request: Request) -> str | None:
    """The notice set by the previous response, if any."""
    raw = request.cookies.get(NOTICE_COOKIE)
    return unquote(raw) if raw else None


def is_fetch(request: Request) -> bool:
    """Whether the request comes from the dashboard's scripts rather than a navigation."""
    return request.headers.get("x-requested-with") == "fetch"


async def signed_in(request: Request) -> tuple[User, Session] | None:
    """The user and session of a valid session cookie, or None."""
    dashboard = dashboard_of(request)
    signer = await dashboard.signer()
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    user = await get_user(dashboard.runtime.database, session.user_id)
    if user is None or user.session_version != session.session_version:
        return None
    return user, session


@dataclass
class Page:
    """A request of a signed-in user, with what handlers need to answer it."""

    request: Request
    dashboard: Dashboard
    user: User
    session: Session
    csrf: str

    @property
    def runtime(self) -> Runtime:
        return self.dashboard.runtime

    @property
    def ui(self) -> str:
        return ui_root(self.request)

    def context(self, **values: Any) -> dict[str, Any]:
        """The template context: shared values (user, CSRF token, links) and `values`."""
        runtime = self.runtime
        return {
            "ui": self.ui,
            "static": f"{self.ui}/static",
            "static_version": STATIC_VERSION,
            "user": self.user,
            "csrf": self.csrf,
            "csrf_field": CSRF_FIELD,
            "sandbox_enabled": runtime.sandbox is not None,
            "request_path": self.request.url.path,
            "notice": read_notice(self.request),
            **values,
        }

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        """A full page (or fragment) from a template."""
        html = self.dashboard.render_html(template, self.context(**values))
        response = HTMLResponse(html, status_code=status)
        if NOTICE_COOKIE in self.request.cookies:
            response.delete_cookie(NOTICE_COOKIE, path=self.ui + "/")
        return response

    def redirect(self, path: str, *, notice: str | None = None) -> RedirectResponse:
        """See-other to a dashboard path (relative to the mount), with an optional notice."""
        response = RedirectResponse(self.ui + path, status_code=303)
        if notice:
            set_notice(response, self.ui, notice)
        return response

    async def form(self) -> FormData:
        """The submitted form, after checking this session's CSRF token (else CsrfRejected)."""
        declared = self.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            raise CsrfRejected("the form is too large")
        submitted = await self.request.form()
        pairs = [(k, v) for k, v in submitted.multi_items() if isinstance(v, str)]
        data = FormData(pairs)
        token = self.request.headers.get(CSRF_HEADER) or data.get(CSRF_FIELD)
        signer = await self.dashboard.signer()
        if not signer.check_csrf(self.session, token):
            raise CsrfRejected("the form's CSRF token is missing or not this session's")
        return data

    async def upload_text(self, name: str) -> str | None:
        """The text of an uploaded file field (the form must be read with `form` first)."""
        submitted = await self.request.form()
        upload = submitted.get(name)
        if upload is None or isinstance(upload, str):
            return None
        content = await upload.read(MAX_FORM_BYTES + 1)
        return content[:MAX_FORM_BYTES].decode("utf-8", "replace")


async def page(request: Request) -> Page:
    """The dependency every signed-in page takes; raises LoginRequired without a session."""
    found = await signed_in(request)
    if found is None:
        raise LoginRequired
    user, session = found
    dashboard = dashboard_of(request)
    signer = await dashboard.signer()
    return Page(request, dashboard, user, session, signer.csrf_token(session))


PageDep = Depends(page)
