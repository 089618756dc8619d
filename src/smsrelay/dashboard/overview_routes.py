"""The overview: the last 24 hours at a glance, connectors' health, and the sandbox inbox."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from smsrelay.dashboard import delivery_stats as ds
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.connectors import list_connectors
from smsrelay.store.timestamps import utc_now

router = APIRouter()
SANDBOX_PHONES_SHOWN = 12


@router.get("/")
async def overview(p: Page = PageDep) -> HTMLResponse:
    """Figures of the last 24 hours, every connector's health, the sandbox's numbers."""
    runtime = p.runtime
    now = utc_now()
    day = ds.Scope(start=now - timedelta(hours=24), end=now + timedelta(seconds=1))
    counts, reasons = await ds.totals(runtime.database, day)
    stored = await list_connectors(runtime.database, runtime.secret_box)
    health = await ds.connector_health(runtime.database, [c.id for c in stored], now=now)
    phones = []
    if runtime.sandbox is not None:
        phones = runtime.sandbox.phones()[:SANDBOX_PHONES_SHOWN]
    return p.render(
        "overview.html",
        nav="overview",
        counts=counts.as_dict(),
        reasons=reasons,
        connectors=[(c, health[c.id].counts.as_dict(), health[c.id]) for c in stored],
        phones=phones,
    )
