"""The suppression list: numbers kept from promotional sends.

A number is suppressed automatically after `threshold` consecutive final delivery failures
(`undelivered`, in the order the messages became final); a delivered message resets the
streak and lifts an automatic suppression. Numbers can also be added by hand; only a
release (DELETE) lifts those. A release also restarts the count: failures before it no
longer count.

The streak is recounted from the messages themselves whenever a number gets a delivered or
undelivered status (`failure_counter`, a status-event handler), not incremented per event,
so handling an event twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from smsrelay.store.database import AnyRow, Database, insert_ignoring_duplicates
from smsrelay.store.lifecycle import MessageStatus
from smsrelay.store.tables import messages, suppressions
from smsrelay.store.timestamps import utc_now
from smsrelay.store.webhooks import EventHandler, StatusEvent

DEFAULT_THRESHOLD = 3
_CHUNK = 500
_COUNTED = (MessageStatus.DELIVERED.value, MessageStatus.UNDELIVERED.value)


@dataclass(frozen=True, slots=True)
class SuppressionRecord:
    """A suppressed number: why (`failures` or `manual`), since when."""

    number: str
    source: str
    reason: str | None
    consecutive_failures: int
    suppressed_at: datetime | None
    updated_at: datetime

    def refusal(self) -> str:
        """What a refused promotional message is told (the `to` field error)."""
        release = f"DELETE /v1/suppressions/{self.number} to send again"
        if self.source == "failures":
            return (
                f"suppressed after {self.consecutive_failures} consecutive delivery "
                f"failures; {release}"
            )
        return f"suppressed by hand ({self.reason or 'no reason given'}); {release}"


def _record(row: AnyRow) -> SuppressionRecord:
    return SuppressionRecord(
        number=row.number,
        source=row.source,
        reason=row.reason,
        consecutive_failures=row.consecutive_failures,
        suppressed_at=row.suppressed_at,
        updated_at=row.updated_at,
    )


async def is_suppressed(db: Database, number: str) -> SuppressionRecord | None:
    """The suppression of `number` (E.164), or None when promotional sends may go to it."""
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(suppressions)
                .where(suppressions.c.number == number)
                .where(suppressions.c.suppressed)
            )
        ).first()
    return _record(row) if row is not None else None


async def find_suppressed(db: Database, numbers: Iterable[str]) -> dict[str, SuppressionRecord]:
    """The suppressed ones among `numbers`, by number (a batch intake asks once)."""
    wanted = sorted(set(numbers))
    found: dict[str, SuppressionRecord] = {}
    async with db.connect() as conn:
        for start in range(0, len(wanted), _CHUNK):
            rows = await conn.execute(
                select(suppressions)
                .where(suppressions.c.number.in_(wanted[start : start + _CHUNK]))
                .where(suppressions.c.suppressed)
            )
            found.update((row.number, _record(row)) for row in rows)
    return found


async def list_suppressions(
    db: Database, *, after: str | None = None, limit: int = 100
) -> tuple[list[SuppressionRecord], str | None]:
    """Suppressed numbers in number order, and the cursor of the next page (None at the end)."""
    query = select(suppressions).where(suppressions.c.suppressed)
    if after is not None:
        query = query.where(suppressions.c.number > after)
    async with db.connect() as conn:
        rows = (await conn.execute(query.order_by(suppressions.c.number).limit(limit + 1))).all()
    page = [_record(row) for row in rows[:limit]]
    return page, (page[-1].number if len(rows) > limit else None)


async def suppress_number(
    db: Database, number: str, *, reason: str | None = None, now: datetime | None = None
) -> tuple[SuppressionRecord, bool]:
    """Suppress `number` by hand; returns the record and whether it was newly suppressed.

    An automatic suppression becomes a manual one (a delivery no longer lifts it).
    """
    now = now or utc_now()
    async with db.transaction() as conn:
        row = await _locked(conn, db, number)
        if row is None:
            values = {
                "number": number,
                "suppressed": True,
                "source": "manual",
                "reason": reason,
                "consecutive_failures": 0,
                "suppressed_at": now,
                "updated_at": now,
            }
            await conn.execute(insert(suppressions).values(values))
            created = True
        else:
            created = not row.suppressed
            values = {
                "suppressed": True,
                "source": "manual",
                "reason": reason if reason is not None else row.reason,
                "suppressed_at": row.suppressed_at if row.suppressed else now,
                "updated_at": now,
            }
            await conn.execute(
                update(suppressions).where(suppressions.c.number == number).values(values)
            )
        saved = (
            await conn.execute(select(suppressions).where(suppressions.c.number == number))
        ).one()
    return _record(saved), created


async def release_number(db: Database, number: str, *, now: datetime | None = None) -> bool:
    """Lift the suppression of `number`; failures before now no longer count.

    False when the number is not suppressed.
    """
    now = now or utc_now()
    async with db.transaction() as conn:
        result = await conn.execute(
            update(suppressions)
            .where(suppressions.c.number == number)
            .where(suppressions.c.suppressed)
            .values(
                suppressed=False,
                consecutive_failures=0,
                counted_since=now,
                suppressed_at=None,
                updated_at=now,
            )
        )
    return bool(result.rowcount)


async def _locked(conn: AsyncConnection, db: Database, number: str) -> AnyRow | None:
    query = select(suppressions).where(suppressions.c.number == number)
    if not db.is_sqlite:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


# ---------------------------------------------------------------- counting failures


def failure_streak(finals_newest_first: Sequence[str]) -> int:
    """How many `undelivered` lead the final statuses, newest first (pure)."""
    streak = 0
    for status in finals_newest_first:
        if status != MessageStatus.UNDELIVERED.value:
            break
        streak += 1
    return streak


def next_state(
    current: AnyRow | None,
    streak: int,
    last_reason: str | None,
    threshold: int,
    now: datetime,
) -> dict[str, Any] | None:
    """The row a number should have after a recount; None when nothing changes (pure)."""
    if current is None:
        if streak == 0:
            return None
        suppressed = streak >= threshold
        return {
            "suppressed": suppressed,
            "source": "failures",
            "reason": last_reason,
            "consecutive_failures": streak,
            "counted_since": None,
            "suppressed_at": now if suppressed else None,
            "updated_at": now,
        }
    values = {
        "suppressed": current.suppressed,
        "source": current.source,
        "reason": current.reason,
        "consecutive_failures": streak,
        "counted_since": current.counted_since,
        "suppressed_at": current.suppressed_at,
    }
    manual = current.suppressed and current.source == "manual"
    if not manual:
        suppressed = streak >= threshold
        if suppressed and not current.suppressed:
            values.update(source="failures", reason=last_reason, suppressed_at=now)
        elif not suppressed:
            values.update(suppressed_at=None)
        values["suppressed"] = suppressed
    if all(getattr(current, name) == value for name, value in values.items()):
        return None
    return {**values, "updated_at": now}


async def recount_failures(
    conn: AsyncConnection,
    db: Database,
    numbers: Iterable[str],
    *,
    threshold: int,
    now: datetime,
) -> None:
    """Recount the failure streak of `numbers` and suppress or release them (grouped writes)."""
    wanted = sorted(set(numbers))
    threshold = max(1, threshold)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = select(suppressions).where(suppressions.c.number.in_(chunk))
        if not db.is_sqlite:
            query = query.with_for_update()
        current: dict[str, AnyRow] = {row.number: row for row in await conn.execute(query)}
        ranked = (
            select(
                messages.c.to,
                messages.c.status,
                messages.c.failure_reason,
                func.row_number()
                .over(
                    partition_by=messages.c.to,
                    order_by=(messages.c.final_at.desc(), messages.c.id.desc()),
                )
                .label("position"),
            )
            .select_from(messages.outerjoin(suppressions, suppressions.c.number == messages.c.to))
            .where(messages.c.to.in_(chunk))
            .where(messages.c.status.in_(_COUNTED))
            .where(
                or_(
                    suppressions.c.counted_since.is_(None),
                    messages.c.final_at > suppressions.c.counted_since,
                )
            )
            .subquery()
        )
        finals: dict[str, list[tuple[str, str | None]]] = {}
        for final in await conn.execute(
            select(ranked.c.to, ranked.c.status, ranked.c.failure_reason)
            .where(ranked.c.position <= threshold)
            .order_by(ranked.c.to, ranked.c.position)
        ):
            finals.setdefault(final.to, []).append((final.status, final.failure_reason))
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for number in chunk:
            history = finals.get(number, [])
            streak = failure_streak([status for status, _ in history])
            last_reason = history[0][1] if streak else None
            row = current.get(number)
            values = next_state(row, streak, last_reason, threshold, now)
            if values is None:
                continue
            if row is None:
                inserts.append({"number": number, **values})
            else:
                updates.append({"b_number": number, **{f"b_{k}": v for k, v in values.items()}})
        if inserts:
            await conn.execute(insert_ignoring_duplicates(db, suppressions), inserts)
        if updates:
            columns = [name for name in updates[0] if name != "b_number"]
            await conn.execute(
                update(suppressions)
                .where(suppressions.c.number == bindparam("b_number"))
                .values(
                    {
                        name[2:]: bindparam(name, type_=suppressions.c[name[2:]].type)
                        for name in columns
                    }
                ),
                updates,
            )


def failure_counter(db: Database, *, threshold: int = DEFAULT_THRESHOLD) -> EventHandler:
    """A status-event handler that recounts the numbers of delivered/undelivered events."""

    async def handle(conn: AsyncConnection, events: Sequence[StatusEvent], now: datetime) -> None:
        numbers = {event.to for event in events if event.status in _COUNTED}
        if numbers:
            await recount_failures(conn, db, numbers, threshold=threshold, now=now)

    return handle
