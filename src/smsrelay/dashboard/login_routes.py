"""Signing in and out: the login form (throttled per address), the session cookie, logout."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from smsrelay.dashboard.connector_form import FormData
from smsrelay.dashboard.pages import (
    NOTICE_COOKIE,
    STATIC_VERSION,
    CsrfRejected,
    Page,
    PageDep,
    dashboard_of,
    read_notice,
    set_notice,
    signed_in,
    ui_root,
)
from smsrelay.dashboard.sessions import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    new_login_csrf,
    same_token,
)
from smsrelay.store.users import authenticate_user, end_sessions

router = APIRouter()


def _safe_next(request: Request, target: str | None) -> str:
    """A post-login destination inside the dashboard (never another site)."""
    ui = ui_root(request)
    if (
        target
        and target.startswith(ui + "/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return ui + "/"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def _login_page(
    request: Request, *, error: str | None, name: str, next_path: str, status: int = 200
) -> HTMLResponse:
    dashboard = dashboard_of(request)
    token = new_login_csrf()
    ui = ui_root(request)
    html = dashboard.render_html(
        "login.html",
        {
            "ui": ui,
            "static": f"{ui}/static",
            "static_version": STATIC_VERSION,
            "csrf": token,
            "csrf_field": CSRF_FIELD,
            "error": error,
            "name": name,
            "next": next_path,
            "notice": read_notice(request),
        },
    )
    response = HTMLResponse(html, status_code=status)
    if NOTICE_COOKIE in request.cookies:
        response.delete_cookie(NOTICE_COOKIE, path=ui + "/")
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=ui + "/login",
        max_age=3600,
    )
    return response


@router.get("/login", response_model=None)
async def login_form(request: Request, next: str | None = None) -> Response:
    """The login form (a signed-in user goes straight on)."""
    if await signed_in(request) is not None:
        return RedirectResponse(_safe_next(request, next), status_code=303)
    return _login_page(request, error=None, name="", next_path=_safe_next(request, next))


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    """Check the name and password; on success set the session cookie and go on."""
    dashboard = dashboard_of(request)
    submitted = await request.form()
    data = FormData([(k, v) for k, v in submitted.multi_items() if isinstance(v, str)])
    name, password = data.get("name"), data.raw("password")
    next_path = _safe_next(request, data.get("next"))
    if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE), data.get(CSRF_FIELD)):
        raise CsrfRejected("the login form expired")
    address = request.client.host if request.client else "unknown"
    wait = dashboard.throttle.retry_after(address)
    if wait > 0:
        response = _login_page(
            request,
            error=f"Too many failed sign-ins from your address. Try again in {int(wait) + 1} s.",
            name=name,
            next_path=next_path,
            status=429,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    runtime = dashboard.runtime
    user = await authenticate_user(runtime.database, name, password) if name else None
    if user is None:
        dashboard.throttle.failed(address)
        return _login_page(
            request,
            error="The name or the password is wrong.",
            name=name,
            next_path=next_path,
            status=401,
        )
    dashboard.throttle.succeeded(address)
    signer = await dashboard.signer()
    signed = RedirectResponse(next_path, status_code=303)
    signed.set_cookie(
        SESSION_COOKIE,
        signer.issue(user.id, user.session_version),
        max_age=signer.max_age,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    signed.delete_cookie(LOGIN_CSRF_COOKIE, path=ui_root(request) + "/login")
    return signed


@router.post("/logout", response_model=None)
async def logout(p: Page = PageDep) -> Response:
    """End every session of this user and go to the login form."""
    await p.form()
    await end_sessions(p.runtime.database, p.user.id)
    response = RedirectResponse(p.ui + "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    set_notice(response, p.ui, "Signed out.")
    return response
