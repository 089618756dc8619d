"""Sending statistics: GROUP BY counts on both databases, rates and failure reasons."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from store_samples import NOW, acme

from smsrelay.store.connectors import StoredConnector, save_connector
from smsrelay.store.database import Database
from smsrelay.store.messages import new_message_id
from smsrelay.store.secret_box import SecretBox
from smsrelay.store.stats import StatsFilter, StatusCounts, message_stats
from smsrelay.store.tables import messages

DAY1 = NOW.replace(hour=23, minute=59)  # late on 2024-06-01, UTC
DAY2 = NOW + timedelta(days=1)


def row(
    connector: StoredConnector,
    status: str,
    *,
    at: datetime = NOW,
    sender: str = "promo",
    campaign: str | None = None,
    reason: str | None = None,
    segments: int = 1,
) -> dict[str, Any]:
    return {
        "id": new_message_id(),
        "connector_id": connector.id,
        "sender_name": sender,
        "to": "+4915112345678",
        "body": "hi",
        "campaign_id": campaign,
        "status": status,
        "segments": segments,
        "failure_reason": reason,
        "created_at": at,
        "updated_at": at,
    }


async def store(database: Database, rows: list[dict[str, Any]]) -> None:
    async with database.transaction() as conn:
        await conn.execute(insert(messages), rows)


def test_delivery_rate_counts_settled_messages_only() -> None:
    counts = StatusCounts({"delivered": 3, "undelivered": 1, "sent": 10, "failed": 5})
    assert counts.delivery_rate == 0.75
    assert counts.sent == 14 and counts.attempted == 19 and counts.total == 19
    assert StatusCounts({"sent": 2, "queued": 1}).delivery_rate is None


async def test_totals_count_each_message_once_in_its_current_status(
    database: Database, connector: StoredConnector
) -> None:
    await store(
        database,
        [
            row(connector, "delivered", segments=2),
            row(connector, "delivered"),
            row(connector, "undelivered", reason="absent_subscriber"),
            row(connector, "unconfirmed"),
            row(connector, "failed", reason="HTTP 400: invalid destination"),
            row(connector, "failed", reason="HTTP 400: invalid destination"),
            row(connector, "sent"),
            row(connector, "queued"),
            row(connector, "dispatch_error"),
            row(connector, "sending"),
            row(connector, "canceled"),
        ],
    )
    report = await message_stats(database)
    totals = report.totals.counts.as_dict()
    assert totals == {
        "total": 11,
        "attempted": 7,
        "sent": 5,
        "awaiting_report": 1,
        "delivered": 2,
        "undelivered": 1,
        "unconfirmed": 1,
        "failed": 2,
        "queued": 2,
        "sending": 1,
        "canceled": 1,
        "segments_sent": 6,
        "delivery_rate": 0.5,
    }
    assert report.totals.failure_reasons == (
        ("HTTP 400: invalid destination", 2),
        ("absent_subscriber", 1),
    )
    assert report.groups == ()


async def test_groups_by_connector_sender_campaign_and_utc_day(
    database: Database, connector: StoredConnector, box: SecretBox
) -> None:
    other = await save_connector(database, box, acme("other"), now=NOW)
    await store(
        database,
        [
            row(connector, "delivered", at=DAY1, sender="promo", campaign="c1"),
            row(connector, "undelivered", at=DAY1, sender="promo", campaign="c1", reason="x"),
            row(connector, "delivered", at=DAY2, sender="alerts", campaign="c2"),
            row(other, "failed", at=DAY2, sender="alerts", reason="y"),
        ],
    )

    def figures(report: Any) -> dict[str | None, tuple[int, int, int, int]]:
        return {
            g.key: (
                g.counts.total,
                g.counts.by_status.get("delivered", 0),
                g.counts.by_status.get("undelivered", 0),
                g.counts.by_status.get("failed", 0),
            )
            for g in report.groups
        }

    by_connector = await message_stats(database, group_by="connector")
    assert figures(by_connector) == {"acme": (3, 2, 1, 0), "other": (1, 0, 0, 1)}
    assert [g.key for g in by_connector.groups] == ["acme", "other"]  # biggest first
    by_sender = await message_stats(database, group_by="sender")
    assert figures(by_sender) == {"promo": (2, 1, 1, 0), "alerts": (2, 1, 0, 1)}
    by_campaign = await message_stats(database, group_by="campaign")
    assert figures(by_campaign) == {"c1": (2, 1, 1, 0), "c2": (1, 1, 0, 0), None: (1, 0, 0, 1)}
    by_day = await message_stats(database, group_by="day")
    assert [g.key for g in by_day.groups] == ["2024-06-01", "2024-06-02"]
    assert figures(by_day) == {"2024-06-01": (2, 1, 1, 0), "2024-06-02": (2, 1, 0, 1)}
    assert by_day.groups[0].failure_reasons == (("x", 1),)
    assert by_day.totals.counts.total == 4


async def test_filters_select_by_period_connector_sender_and_campaign(
    database: Database, connector: StoredConnector, box: SecretBox
) -> None:
    other = await save_connector(database, box, acme("other"), now=NOW)
    await store(
        database,
        [
            row(connector, "delivered", at=DAY1, campaign="c1"),
            row(connector, "delivered", at=DAY2, sender="alerts"),
            row(other, "failed", at=DAY2, campaign="c1"),
        ],
    )

    async def total(**where: Any) -> int:
        return (await message_stats(database, StatsFilter(**where))).totals.counts.total

    assert await total(start=DAY2) == 2
    assert await total(end=DAY2) == 1
    assert await total(start=DAY1, end=DAY1 + timedelta(seconds=1)) == 1
    assert await total(connector="other") == 1
    assert await total(sender="alerts") == 1
    assert await total(campaign_id="c1") == 2
    assert await total(connector="nope") == 0
