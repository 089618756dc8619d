"""Analytics: the funnel, delivery rate by day and failure reasons, per connector/sender/campaign."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from smsrelay.dashboard import delivery_stats as ds
from smsrelay.dashboard.charts import FunnelStep, bar_chart, funnel_chart, rate_chart
from smsrelay.dashboard.pages import Page, PageDep
from smsrelay.store.timestamps import utc_now

router = APIRouter(prefix="/analytics")
PERIODS = (1, 7, 30, 90)
GROUP_LABELS = {"connector": "Connector", "sender": "Sender", "campaign": "Campaign"}


def period_start(now: datetime, days: int) -> datetime:
    """The start of the period: midnight UTC, `days - 1` days before today."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1)


@router.get("")
async def analytics_page(
    p: Page = PageDep,
    by: str = "connector",
    key: str = "",
    days: int = 30,
) -> HTMLResponse:
    """Figures of every message queued in the period, or of one connector/sender/campaign."""
    group: ds.GroupBy = "connector"
    for candidate in ds.GROUPS:
        if by == candidate:
            group = candidate
    days = days if days in PERIODS else 30
    now = utc_now()
    period = ds.Scope(start=period_start(now, days), end=now + timedelta(seconds=1))
    found = await ds.analyse(p.runtime.database, period, group, key=key or None)
    counts = found.totals.as_dict()
    subject = f"{group} {key}" if key else "all messages"
    steps = [
        FunnelStep("Attempted", counts["attempted"]),
        FunnelStep("Sent", counts["sent"]),
        FunnelStep("Delivered", counts["delivered"]),
    ]
    return p.render(
        "analytics.html",
        nav="analytics",
        group=group,
        group_labels=GROUP_LABELS,
        groups=[(label, c.as_dict()) for label, c in found.groups],
        key=key,
        days=days,
        periods=PERIODS,
        subject=subject,
        counts=counts,
        definitions=ds.DEFINITIONS,
        steps=steps,
        daily=found.daily,
        reasons=found.reasons,
        funnel_svg=funnel_chart(steps, title=f"Funnel of {subject}, last {days} days"),
        rate_svg=rate_chart(found.daily, title=f"Delivery rate by day of {subject}"),
        reasons_svg=bar_chart(found.reasons, title=f"Failure reasons of {subject}"),
    )
