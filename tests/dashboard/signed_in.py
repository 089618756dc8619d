"""An HTTP client signed in to the dashboard, for tests that need no browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from gateway import Gateway, running_gateway
from smsrelay.store.database import Database
from smsrelay.store.users import create_user

PASSWORD = "a long enough password"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page carries (its meta tag, else its first form's field)."""
    found = _META.search(html) or _CSRF.search(html)
    assert found is not None, "the page carries no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    """Post the login form as a browser would (its CSRF cookie and field)."""
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(form.text), "name": name, "password": password, "next": "/ui/"},
    )


@asynccontextmanager
async def signed_in_client(
    base_url: str, database: Database, name: str = "maya"
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A new user and a client signed in as them; yields the client and a CSRF token."""
    await create_user(database, name, PASSWORD)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await sign_in(client, name)
        assert response.status_code == 303, response.text
        overview = await client.get("/ui/")
        assert overview.status_code == 200
        yield client, csrf_of(overview.text)


@asynccontextmanager
async def signed_in_gateway(
    database_url: str, workdir: Path
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, str]]:
    """A running server, and a client signed in to its dashboard with a CSRF token."""
    async with (
        running_gateway(database_url, workdir) as gw,
        signed_in_client(gw.base_url, gw.runtime.database) as (client, csrf),
    ):
        yield gw, client, csrf
