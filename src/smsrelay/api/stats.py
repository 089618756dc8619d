"""`GET /v1/stats`: counts by status, delivery rate and top failure reasons (docs/stats.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from smsrelay.connectors.errors import FieldError
from smsrelay.http_common import Problem, get_runtime, require_api_key
from smsrelay.runtime import Runtime
from smsrelay.store.stats import DEFINITIONS, StatsFilter, StatsGroup, message_stats

router = APIRouter(prefix="/v1/stats", tags=["stats"], dependencies=[Depends(require_api_key)])


def _utc(value: datetime | None) -> datetime | None:
    # A time without a zone is read as UTC, like the day buckets.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def group_view(group: StatsGroup, *, keyed: bool = True) -> dict[str, Any]:
    """One group's figures as the API shows them (`key` null: no campaign, no sender)."""
    view: dict[str, Any] = {"key": group.key} if keyed else {}
    view.update(group.counts.as_dict())
    view["top_failure_reasons"] = [
        {"reason": reason, "count": count} for reason, count in group.failure_reasons
    ]
    return view


@router.get("")
async def stats(
    start: datetime | None = Query(
        default=None, alias="from", description="Messages queued at or after (ISO 8601; UTC)."
    ),
    end: datetime | None = Query(
        default=None, alias="to", description="Messages queued before (ISO 8601; UTC)."
    ),
    connector: str | None = Query(default=None, max_length=64),
    sender: str | None = Query(default=None, max_length=64),
    campaign_id: str | None = Query(default=None, max_length=128),
    group_by: Literal["connector", "sender", "campaign", "day"] | None = None,
    top_reasons: int = Query(default=5, ge=0, le=50),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Totals over the selected messages and, with `group_by`, per group; see `definitions`."""
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start >= end:
        raise Problem(
            422,
            "the period is empty",
            errors=[FieldError("query.to", "must be after `from`")],
        )
    where = StatsFilter(
        start=start, end=end, connector=connector, sender=sender, campaign_id=campaign_id
    )
    report = await message_stats(
        runtime.database, where, group_by=group_by, top_reasons=top_reasons
    )
    answer: dict[str, Any] = {
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "filters": {"connector": connector, "sender": sender, "campaign_id": campaign_id},
        "group_by": group_by,
        "totals": group_view(report.totals, keyed=False),
    }
    if group_by is not None:
        answer["groups"] = [group_view(g) for g in report.groups]
    answer["definitions"] = DEFINITIONS
    return answer
