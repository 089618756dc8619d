"""Delivery figures for the dashboard pages, aggregated in SQL in as few scans as possible.

The figures and their definitions are those of `GET /v1/stats`: counts by status go into
`store.stats.StatusCounts`, which derives attempted, sent, delivered and the delivery rate
(`store.stats.DEFINITIONS`). The analytics page needs three GROUP BY queries however many
messages there are: counts by group and status (the table of connectors, senders or
campaigns), counts by day and status of the selected scope (the daily chart and the
totals), and its failure reasons. Connectors are grouped by id and named afterwards, so no
query joins `connectors` row by row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import ColumnElement, Executable, String, bindparam, func, select, union_all

from smsrelay.dashboard.charts import DailyRate
from smsrelay.store.database import Database
from smsrelay.store.stats import ACCEPTED, DEFINITIONS, FAILURES, StatusCounts
from smsrelay.store.tables import connectors, messages

GroupBy = Literal["connector", "sender", "campaign"]
GROUPS: tuple[GroupBy, ...] = ("connector", "sender", "campaign")
NO_REASON = "(no reason given)"
_ACCEPTED = frozenset(s.value for s in ACCEPTED)

__all__ = [
    "DEFINITIONS",
    "GROUPS",
    "Analysis",
    "ConnectorHealth",
    "GroupBy",
    "Scope",
    "StatusCounts",
    "analyse",
    "campaign_counts",
    "connector_health",
    "totals",
]


@dataclass(frozen=True, slots=True)
class Scope:
    """Messages queued in [start, end), optionally of one connector, sender or campaign."""

    start: datetime
    end: datetime
    connector_id: int | None = None
    sender: str | None = None
    campaign_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE conditions selecting these messages."""
        where = [messages.c.created_at >= self.start, messages.c.created_at < self.end]
        if self.connector_id is not None:
            where.append(messages.c.connector_id == self.connector_id)
        if self.sender is not None:
            where.append(messages.c.sender_name == self.sender)
        if self.campaign_id is not None:
            where.append(messages.c.campaign_id == self.campaign_id)
        return where


def _day_slices(scope: Scope) -> list[tuple[str, datetime, datetime]]:
    """The UTC days of the scope as (YYYY-MM-DD, start, end), the first and last clipped."""
    slices: list[tuple[str, datetime, datetime]] = []
    day = scope.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < scope.end:
        following = day + timedelta(days=1)
        slices.append((day.date().isoformat(), max(day, scope.start), min(following, scope.end)))
        day = following
    return slices


def _group_column(group: GroupBy) -> Any:
    return {
        "connector": messages.c.connector_id,
        "sender": messages.c.sender_name,
        "campaign": messages.c.campaign_id,
    }[group]


async def connector_names(db: Database) -> dict[int, str]:
    """Every connector's name by id."""
    async with db.connect() as conn:
        return {row.id: row.name for row in await conn.execute(select(connectors))}


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the analytics page shows for one scope."""

    groups: list[tuple[str | None, StatusCounts]]  # busiest first; key None: none given
    totals: StatusCounts
    daily: list[DailyRate]
    reasons: list[tuple[str, int]]


def _daily(per_day: dict[str, StatusCounts], scope: Scope) -> tuple[list[DailyRate], StatusCounts]:
    """Every day of the scope (the empty ones too) and the sum over them."""
    totals = StatusCounts()
    daily: list[DailyRate] = []
    current = scope.start.date()
    last = (scope.end - timedelta(microseconds=1)).date()
    while current <= last:
        counts = per_day.get(current.isoformat(), StatusCounts())
        totals = totals.merged(counts)
        view = counts.as_dict()
        settled = view["delivered"] + view["undelivered"] + view["unconfirmed"]
        daily.append(DailyRate(current.isoformat(), counts.sent, view["delivered"], settled))
        current += timedelta(days=1)
    return daily, totals


class _Tally:
    """Counts by status and accepted segments, summed in place (one row of the query each)."""

    __slots__ = ("by_status", "segments")

    def __init__(self) -> None:
        self.by_status: dict[str, int] = {}
        self.segments = 0

    def add(self, status: str, number: int, segments: int | None) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + int(number)
        if status in _ACCEPTED:
            self.segments += int(segments or 0)

    def counts(self) -> StatusCounts:
        return StatusCounts(dict(self.by_status), self.segments)


async def _reasons(db: Database, scope: Scope, limit: int) -> list[tuple[str, int]]:
    query = (
        select(messages.c.failure_reason, func.count())
        .where(*scope.conditions(), messages.c.status.in_([s.value for s in FAILURES]))
        .group_by(messages.c.failure_reason)
    )
    counted: Counter[str] = Counter()
    async with db.connect() as conn:
        for reason, number in await conn.execute(query):
            counted[reason or NO_REASON] += int(number)
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))[:limit]


async def analyse(
    db: Database,
    period: Scope,
    group: GroupBy,
    *,
    key: str | None = None,
    names: dict[int, str] | None = None,
    top_reasons: int = 10,
) -> Analysis:
    """The groups of the period, and daily figures, totals and reasons of the chosen one.

    One statement counts the period by day, group and status: the group table, the daily
    chart and the totals all come from it. It is a UNION of one GROUP BY per day, each
    reading a range of the created_at index: SQLite aggregates by sorting, and thirty
    small sorts cost far less than one of every row. The failure reasons are a second,
    smaller query.
    """
    names = names if names is not None else await connector_names(db)
    slices = _day_slices(period)
    parameters: dict[str, Any] = {}
    for index, (label, low, high) in enumerate(slices):
        parameters.update({f"day{index}": label, f"low{index}": low, f"high{index}": high})
    by_group: dict[Any, _Tally] = {}
    daily_tallies: dict[str, _Tally] = {}
    chosen = _chosen_key(group, key, names)
    async with db.connect() as conn:
        rows = await conn.execute(_per_day_statement(group, len(slices)), parameters)
        for day_key, group_key, status, number, segments in rows:
            tally = by_group.get(group_key)
            if tally is None:
                tally = by_group[group_key] = _Tally()
            tally.add(status, number, segments)
            if key is None or group_key == chosen:
                tally = daily_tallies.get(day_key)
                if tally is None:
                    tally = daily_tallies[day_key] = _Tally()
                tally.add(status, number, segments)
    per_day = {day: tally.counts() for day, tally in daily_tallies.items()}
    found = {group_key: tally.counts() for group_key, tally in by_group.items()}
    daily, counts = _daily(per_day, period)
    scope = period
    if key:
        scope = Scope(
            period.start,
            period.end,
            connector_id=chosen if group == "connector" else None,
            sender=key if group == "sender" else None,
            campaign_id=key if group == "campaign" else None,
        )
    reasons = await _reasons(db, scope, top_reasons)
    return Analysis(_labelled(found, group, names), counts, daily, reasons)


@lru_cache(maxsize=32)
def _per_day_statement(group: GroupBy, days: int) -> Executable:
    """A UNION of one GROUP BY per day, bound by name (`day<i>`, `low<i>`, `high<i>`).

    Built once per group and number of days: constructing ninety selects costs more than
    running them.
    """
    column = _group_column(group)
    per_day = [
        select(
            bindparam(f"day{index}", type_=String).label("day"),
            column.label("key"),
            messages.c.status,
            func.count(),
            func.sum(messages.c.segments),
        )
        .where(
            messages.c.created_at >= bindparam(f"low{index}", type_=messages.c.created_at.type),
            messages.c.created_at < bindparam(f"high{index}", type_=messages.c.created_at.type),
        )
        .group_by(column, messages.c.status)
        for index in range(days)
    ]
    return per_day[0] if days == 1 else union_all(*per_day)


def _chosen_key(group: GroupBy, key: str | None, names: dict[int, str]) -> Any:
    """The group column's value for `key` (a connector's id for its name)."""
    if group != "connector" or key is None:
        return key
    return next((cid for cid, name in names.items() if name == key), -1)


def _labelled(
    found: dict[Any, StatusCounts], group: GroupBy, names: dict[int, str]
) -> list[tuple[str | None, StatusCounts]]:
    labelled: list[tuple[str | None, StatusCounts]] = []
    for key, counts in found.items():
        if group == "connector":
            label: str | None = names.get(key, f"(deleted connector #{key})")
        else:
            label = None if key is None else str(key)
        labelled.append((label, counts))
    labelled.sort(key=lambda item: (-item[1].total, item[0] is None, item[0] or ""))
    return labelled


async def totals(db: Database, scope: Scope) -> tuple[StatusCounts, list[tuple[str, int]]]:
    """Counts and top five failure reasons of a scope (a short period: the overview)."""
    query = (
        select(messages.c.status, func.count(), func.sum(messages.c.segments))
        .where(*scope.conditions())
        .group_by(messages.c.status)
    )
    tally = _Tally()
    async with db.connect() as conn:
        for status, number, segments in await conn.execute(query):
            tally.add(status, number, segments)
    return tally.counts(), await _reasons(db, scope, 5)


async def campaign_counts(db: Database, campaign_ids: Sequence[str]) -> dict[str, StatusCounts]:
    """The counts of each campaign's messages by status (every id present, maybe empty)."""
    tallies = {campaign_id: _Tally() for campaign_id in campaign_ids}
    if campaign_ids:
        query = (
            select(
                messages.c.campaign_id,
                messages.c.status,
                func.count(),
                func.sum(messages.c.segments),
            )
            .where(messages.c.campaign_id.in_(list(campaign_ids)))
            .group_by(messages.c.campaign_id, messages.c.status)
        )
        async with db.connect() as conn:
            for campaign_id, status, number, segments in await conn.execute(query):
                tallies[campaign_id].add(status, number, segments)
    return {campaign_id: tally.counts() for campaign_id, tally in tallies.items()}


# ---------------------------------------------------------------- connector health


@dataclass(frozen=True, slots=True)
class ConnectorHealth:
    """A connector's recent figures and its most recent failure."""

    counts: StatusCounts
    last_error: str | None
    last_error_at: datetime | None


async def connector_health(
    db: Database, connector_ids: Sequence[int], *, now: datetime, hours: int = 24
) -> dict[int, ConnectorHealth]:
    """Each connector's last `hours`: figures and latest failure reason, by connector id."""
    since = now - timedelta(hours=hours)
    tallies: dict[int, _Tally] = {}
    query = (
        select(
            messages.c.connector_id, messages.c.status, func.count(), func.sum(messages.c.segments)
        )
        .where(messages.c.created_at >= since)
        .group_by(messages.c.connector_id, messages.c.status)
    )
    health: dict[int, ConnectorHealth] = {}
    async with db.connect() as conn:
        for connector_id, status, number, segments in await conn.execute(query):
            tallies.setdefault(connector_id, _Tally()).add(status, number, segments)
        for connector_id in connector_ids:
            # The newest failures first, within the window (the created_at index bounds it).
            row = (
                await conn.execute(
                    select(messages.c.failure_reason, messages.c.updated_at)
                    .where(messages.c.connector_id == connector_id)
                    .where(messages.c.created_at >= since)
                    .where(messages.c.failure_reason.is_not(None))
                    .order_by(messages.c.created_at.desc())
                    .limit(1)
                )
            ).first()
            health[connector_id] = ConnectorHealth(
                tallies.get(connector_id, _Tally()).counts(),
                row.failure_reason if row else None,
                row.updated_at if row else None,
            )
    return health
