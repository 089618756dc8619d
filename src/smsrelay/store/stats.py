"""Sending statistics: counts by status, delivery rate and failure reasons, optionally grouped.

Two GROUP BY queries over `messages` (counts by group and status; failure reasons by group)
on either database; everything derived from them is pure (`StatusCounts`). Messages are
selected by when they were queued (`created_at`, `start` inclusive, `end` exclusive); a
message counts once, in its current status. Days are UTC calendar days.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, String, func, select

from smsrelay.store.database import Database
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.tables import connectors, messages

S = MessageStatus
GroupBy = Literal["connector", "sender", "campaign", "day"]
GROUP_BY: tuple[str, ...] = ("connector", "sender", "campaign", "day")

# Accepted by the provider (whatever happened after).
ACCEPTED = (S.SENT, S.DELIVERED, S.UNDELIVERED, S.UNCONFIRMED)
# Accepted and settled one way or the other: the delivery rate's denominator.
SETTLED = (S.DELIVERED, S.UNDELIVERED, S.UNCONFIRMED)
FAILURES = (S.FAILED, S.UNDELIVERED)

DEFINITIONS: dict[str, str] = {
    "total": "messages queued in the period (by created_at), in their current status",
    "attempted": "sent + failed: messages the provider accepted, or that failed for good",
    "sent": "accepted by the provider: sent, delivered, undelivered or unconfirmed now",
    "awaiting_report": "accepted, no final delivery report yet (status sent)",
    "delivered": "a delivery report said delivered",
    "undelivered": "a delivery report said the message could not be delivered",
    "unconfirmed": "accepted, but no final report came within the connector's window",
    "failed": "never accepted: rejected by the provider, permanent error, retries exhausted",
    "queued": "not yet with the provider: queued, or held for failing credentials",
    "sending": "being sent right now",
    "canceled": "canceled before sending",
    "segments_sent": "SMS segments of the accepted messages",
    "delivery_rate": (
        "delivered / (delivered + undelivered + unconfirmed); null when that sum is 0. "
        "Messages still awaiting a report are left out, so the rate does not dip while "
        "reports are on their way."
    ),
    "top_failure_reasons": "failure_reason of failed and undelivered messages, most common first",
}


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which messages count: queued in [start, end), of a connector, sender or campaign."""

    start: datetime | None = None
    end: datetime | None = None
    connector: str | None = None
    sender: str | None = None
    campaign_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """How many messages are in each status, and the figures derived from them (pure)."""

    by_status: Mapping[str, int] = field(default_factory=dict)
    segments_sent: int = 0

    def _sum(self, statuses: tuple[MessageStatus, ...]) -> int:
        return sum(self.by_status.get(status.value, 0) for status in statuses)

    @property
    def total(self) -> int:
        """Every message counted."""
        return sum(self.by_status.values())

    @property
    def sent(self) -> int:
        """Accepted by the provider."""
        return self._sum(ACCEPTED)

    @property
    def attempted(self) -> int:
        """Accepted, or failed for good."""
        return self.sent + self._sum((S.FAILED,))

    @property
    def delivery_rate(self) -> float | None:
        """delivered / (delivered + undelivered + unconfirmed), None without any of those."""
        settled = self._sum(SETTLED)
        return round(self._sum((S.DELIVERED,)) / settled, 4) if settled else None

    def merged(self, other: StatusCounts) -> StatusCounts:
        """The sum of two counts."""
        combined = Counter(self.by_status)
        combined.update(other.by_status)
        return StatusCounts(dict(combined), self.segments_sent + other.segments_sent)

    def as_dict(self) -> dict[str, Any]:
        """The counts as the API shows them."""
        count = self.by_status.get
        return {
            "total": self.total,
            "attempted": self.attempted,
            "sent": self.sent,
            "awaiting_report": count(S.SENT.value, 0),
            "delivered": count(S.DELIVERED.value, 0),
            "undelivered": count(S.UNDELIVERED.value, 0),
            "unconfirmed": count(S.UNCONFIRMED.value, 0),
            "failed": count(S.FAILED.value, 0),
            "queued": count(S.QUEUED.value, 0) + count(S.DISPATCH_ERROR.value, 0),
            "sending": count(S.SENDING.value, 0),
            "canceled": count(S.CANCELED.value, 0),
            "segments_sent": self.segments_sent,
            "delivery_rate": self.delivery_rate,
        }


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """The figures of one group (or of everything: key None in `totals`)."""

    key: str | None
    counts: StatusCounts
    failure_reasons: tuple[tuple[str, int], ...]  # most common first


@dataclass(frozen=True, slots=True)
class StatsReport:
    """Totals over the filtered messages and, when grouped, one entry per group."""

    group_by: str | None
    totals: StatsGroup
    groups: tuple[StatsGroup, ...] = ()


def _day(db: Database) -> ColumnElement[str]:
    if db.is_sqlite:
        # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
        return func.substr(messages.c.created_at, 1, 10, type_=String)
    return func.to_char(func.timezone("UTC", messages.c.created_at), "YYYY-MM-DD", type_=String)


def _group_columns(db: Database, group_by: str | None) -> list[ColumnElement[Any]]:
    if group_by is None:
        return []
    if group_by == "connector":
        return [messages.c.connector_id, connectors.c.name]
    if group_by == "sender":
        return [messages.c.sender_name]
    if group_by == "campaign":
        return [messages.c.campaign_id]
    if group_by == "day":
        return [_day(db).label("day")]
    raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)} (got {group_by!r})")


def _key(group_by: str | None, values: tuple[Any, ...]) -> str | None:
    if group_by is None:
        return None
    if group_by == "connector":
        connector_id, name = values
        return str(name) if name is not None else f"(deleted connector #{connector_id})"
    value = values[0]
    return str(value) if value is not None else None


def _filtered(query: Select[Any], where: StatsFilter) -> Select[Any]:
    query = query.select_from(
        messages.outerjoin(connectors, connectors.c.id == messages.c.connector_id)
    )
    if where.start is not None:
        query = query.where(messages.c.created_at >= where.start)
    if where.end is not None:
        query = query.where(messages.c.created_at < where.end)
    if where.connector is not None:
        query = query.where(connectors.c.name == where.connector)
    if where.sender is not None:
        query = query.where(messages.c.sender_name == where.sender)
    if where.campaign_id is not None:
        query = query.where(messages.c.campaign_id == where.campaign_id)
    return query


async def message_stats(
    db: Database,
    where: StatsFilter | None = None,
    *,
    group_by: str | None = None,
    top_reasons: int = 5,
) -> StatsReport:
    """Counts, delivery rate and top failure reasons of the messages `where` selects."""
    where = where or StatsFilter()
    columns = _group_columns(db, group_by)
    width = len(columns)
    counts_query = _filtered(
        select(*columns, messages.c.status, func.count(), func.sum(messages.c.segments)), where
    ).group_by(*columns, messages.c.status)
    reasons_query = (
        _filtered(select(*columns, messages.c.failure_reason, func.count()), where)
        .where(messages.c.status.in_([s.value for s in FAILURES]))
        .group_by(*columns, messages.c.failure_reason)
    )
    async with db.connect() as conn:
        count_rows = (await conn.execute(counts_query)).all()
        reason_rows = (await conn.execute(reasons_query)).all()
    accepted = {s.value for s in ACCEPTED}
    counts: dict[str | None, StatusCounts] = {}
    for row in count_rows:
        key = _key(group_by, tuple(row[:width]))
        status, number, segments = row[width], int(row[width + 1]), int(row[width + 2] or 0)
        piece = StatusCounts({status: number}, segments if status in accepted else 0)
        counts[key] = counts[key].merged(piece) if key in counts else piece
    reasons: dict[str | None, Counter[str]] = {}
    for row in reason_rows:
        key = _key(group_by, tuple(row[:width]))
        reason = row[width] or "(no reason given)"
        reasons.setdefault(key, Counter())[reason] += int(row[width + 1])
    total_counts = StatusCounts()
    total_reasons: Counter[str] = Counter()
    groups = []
    for key, group_counts in counts.items():
        total_counts = total_counts.merged(group_counts)
        group_reasons = reasons.get(key, Counter())
        total_reasons.update(group_reasons)
        groups.append(StatsGroup(key, group_counts, _top(group_reasons, top_reasons)))
    if group_by == "day":
        groups.sort(key=lambda g: g.key or "")
    else:
        groups.sort(key=lambda g: (-g.counts.total, g.key is None, g.key or ""))
    totals = StatsGroup(None, total_counts, _top(total_reasons, top_reasons))
    return StatsReport(group_by, totals, tuple(groups) if group_by else ())


def _top(reasons: Counter[str], limit: int) -> tuple[tuple[str, int], ...]:
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ranked[:limit])
